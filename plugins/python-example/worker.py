"""A Plughost worker in Python: it speaks plugin.PluginControlService/WorkerStream from
the project's proto/plugin.proto (stubs generated at start with grpcio-tools) and offers
the `disk_usage` job type. It does what a Rust worker does: hello, schema, detection,
execution with progress, heartbeats, acknowledgements, cancellation, shutdown and
reconnects with backoff.

    python3 worker.py --admin 127.0.0.1:33646 --worker-id py-1

Threads: the gRPC request iterator drains one outbox queue; the main thread reads the
admin's messages; each detection and execution runs on its own thread; a heartbeat
thread reports the running work at the interval the admin asks for.
"""

import sys

# The worker runs from a source checkout: keep it free of __pycache__ directories.
sys.dont_write_bytecode = True

import argparse  # noqa: E402
import json
import logging
import queue
import random
import signal
import socket
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc

import stubs
from disk_usage import JOB_TYPE, Canceled, DiskUsage

PROTOCOL_VERSION = "plugin.v1"
VERSION = "0.1.0"
# How long a stopping worker waits for the admin to end its half-closed stream.
STOP_TIMEOUT = 5
log = logging.getLogger("plughost-python-worker")


class Rejected(Exception):
    """The admin refused this worker; retrying would be refused again."""


class Work:
    """One running detection or execution."""

    def __init__(self, request_id, kind, job_id=""):
        self.request_id = request_id
        self.kind = kind
        self.job_id = job_id
        self.cancel = threading.Event()
        self.reason = ""
        self.percent = 0.0
        self.stage = ""


class PythonWorker:
    def __init__(self, pb, pb_grpc, worker_id, address):
        self.pb, self.pb_grpc = pb, pb_grpc
        self.worker_id = worker_id
        self.instance_id = uuid.uuid4().hex
        self.address = address
        self.handler = DiskUsage(pb)
        self.capability = self.handler.capability()
        self.lock = threading.Lock()
        self.running = {}  # request_id -> Work
        self.outbox = None
        self.call = None  # the stream's call, to cancel it when a stop is not answered
        self.stopping = threading.Event()

    # -- sending ----------------------------------------------------------------------

    def send(self, **body):
        """Queues one WorkerToAdminMessage with `body` as its oneof member. Between
        streams there is nowhere to send it and it is dropped: the admin requeues the
        jobs of a worker whose stream closed."""
        msg = self.pb.WorkerToAdminMessage(worker_id=self.worker_id, **body)
        msg.sent_at.GetCurrentTime()
        with self.lock:
            outbox = self.outbox
        if outbox is not None:
            outbox.put(msg)

    def ack(self, request_id, accepted, message=""):
        self.send(acknowledge=self.pb.WorkerAcknowledge(request_id=request_id, accepted=accepted, message=message))

    def slots_used(self, kind):
        with self.lock:
            return sum(1 for w in self.running.values() if w.kind == kind)

    def heartbeat(self):
        pb = self.pb
        with self.lock:
            works = list(self.running.values())
        hb = pb.WorkerHeartbeat(
            worker_id=self.worker_id,
            detection_slots_used=sum(1 for w in works if w.kind == pb.WORK_KIND_DETECTION),
            detection_slots_total=self.capability.max_detection_concurrency,
            execution_slots_used=sum(1 for w in works if w.kind == pb.WORK_KIND_EXECUTION),
            execution_slots_total=self.capability.max_execution_concurrency,
            metadata={"language": "python"},
        )
        for w in works:
            hb.running_work.add(work_id=w.job_id or w.request_id, kind=w.kind, job_type=JOB_TYPE,
                                state=pb.JOB_STATE_RUNNING, progress_percent=w.percent, stage=w.stage)
        self.send(heartbeat=hb)

    # -- one stream -------------------------------------------------------------------

    def session(self, target):
        """Runs one stream until it ends; returns the admin's reconnect delay."""
        pb = self.pb
        outbox = queue.Queue(maxsize=1024)
        with self.lock:
            self.outbox = outbox
        hello = pb.WorkerHello(
            worker_id=self.worker_id, worker_instance_id=self.instance_id, address=self.address,
            worker_version=VERSION, protocol_version=PROTOCOL_VERSION, capabilities=[self.capability],
            metadata={"language": "python", "python": sys.version.split()[0]},
        )
        self.send(hello=hello)

        def requests():
            while True:
                msg = outbox.get()
                if msg is None:
                    return
                yield msg

        channel = grpc.insecure_channel(target)
        stub = self.pb_grpc.PluginControlServiceStub(channel)
        stream_done = threading.Event()
        try:
            responses = stub.WorkerStream(requests())
            first = next(responses)
            if first.WhichOneof("body") != "hello":
                raise RuntimeError("the admin did not answer with its hello")
            if not first.hello.accepted:
                raise Rejected(first.hello.message)
            interval = max(1, first.hello.heartbeat_interval_seconds or 5)
            log.info("connected to %s (heartbeat every %ss)", target, interval)
            threading.Thread(target=self.beat, args=(interval, stream_done), daemon=True).start()
            with self.lock:
                self.call = responses
            # Ends when the admin ends the stream, which it does once this worker
            # half-closes it (stop()).
            for msg in responses:
                self.dispatch(msg)
            return max(1, first.hello.reconnect_delay_seconds or 1)
        finally:
            stream_done.set()
            with self.lock:
                if self.outbox is outbox:
                    self.outbox = None
                    self.call = None
            outbox.put(None)
            channel.close()

    def beat(self, interval, stream_done):
        while not stream_done.wait(interval):
            self.heartbeat()

    # -- admin requests ---------------------------------------------------------------

    def dispatch(self, msg):
        pb = self.pb
        kind = msg.WhichOneof("body")
        rid = msg.request_id
        if kind == "request_config_schema":
            job_type = msg.request_config_schema.job_type
            if job_type == JOB_TYPE:
                self.send(config_schema_response=pb.ConfigSchemaResponse(
                    request_id=rid, job_type=job_type, success=True, job_type_descriptor=self.handler.descriptor()))
            else:
                self.send(config_schema_response=pb.ConfigSchemaResponse(
                    request_id=rid, job_type=job_type, success=False, error_message=f"unknown job type {job_type}"))
        elif kind == "run_detection_request":
            self.start_detection(rid, msg.run_detection_request)
        elif kind == "execute_job_request":
            self.start_execution(rid, msg.execute_job_request)
        elif kind == "cancel_request":
            target = msg.cancel_request.target_id
            with self.lock:
                works = [w for w in self.running.values() if target in (w.request_id, w.job_id)]
            for w in works:
                w.reason = msg.cancel_request.reason or "canceled by the admin"
                w.cancel.set()
            self.ack(rid, bool(works), "" if works else f"no running work {target}")
        elif kind == "shutdown":
            grace = msg.shutdown.grace_period_seconds
            log.info("admin asked to shut down (%s)", msg.shutdown.reason)
            self.ack(rid, True)
            self.stopping.set()
            threading.Thread(target=self.stop_after, args=(grace,), daemon=True).start()
        elif kind == "request_object_preview":
            self.send(object_preview_response=pb.ObjectPreviewResponse(
                request_id=rid, success=False, error_message="previews are not supported"))
        else:
            log.debug("ignoring %s", kind)

    def stop_after(self, grace):
        """The admin's shutdown: running work gets `grace` seconds, then stops."""
        time.sleep(max(0, grace))
        self.stop("the admin asked to shut down")

    def start_detection(self, rid, request):
        pb = self.pb
        refuse = None
        if request.job_type != JOB_TYPE:
            refuse = f"unknown job type {request.job_type}"
        elif self.stopping.is_set():
            refuse = "worker is shutting down"
        elif self.slots_used(pb.WORK_KIND_DETECTION) >= self.capability.max_detection_concurrency:
            refuse = "detector is at capacity"
        if refuse:
            self.ack(rid, False, refuse)
            self.send(detection_complete=pb.DetectionComplete(
                request_id=rid, job_type=request.job_type, success=False, error_message=refuse))
            return
        work = Work(rid, pb.WORK_KIND_DETECTION)
        with self.lock:
            self.running[rid] = work
        self.ack(rid, True)
        threading.Thread(target=self.run_detection, args=(work, request), daemon=True).start()

    def run_detection(self, work, request):
        pb = self.pb

        def activity(message):
            update = pb.JobProgressUpdate(request_id=work.request_id, job_type=JOB_TYPE, state=pb.JOB_STATE_RUNNING)
            event = update.activities.add(source=pb.ACTIVITY_SOURCE_DETECTOR, message=message)
            event.created_at.GetCurrentTime()
            self.send(job_progress_update=update)

        complete = pb.DetectionComplete(request_id=work.request_id, job_type=JOB_TYPE)
        try:
            proposals = self.handler.detect(request, activity, work.cancel)
            if request.max_results > 0:
                proposals = proposals[: request.max_results]
            for i in range(0, len(proposals), 50):
                self.send(detection_proposals=pb.DetectionProposals(
                    request_id=work.request_id, job_type=JOB_TYPE, proposals=proposals[i:i + 50], has_more=True))
            complete.success = True
            complete.total_proposals = len(proposals)
        except Canceled:
            complete.error_message = f"canceled: {work.reason}"
        except Exception as e:  # a failed detection is reported, never dropped
            log.exception("detection failed")
            complete.error_message = str(e) or type(e).__name__
        finally:
            with self.lock:
                self.running.pop(work.request_id, None)
        self.send(detection_complete=complete)

    def start_execution(self, rid, request):
        pb = self.pb
        job = request.job
        refuse = None
        if job.job_type != JOB_TYPE:
            refuse = f"unknown job type {job.job_type}"
        elif self.stopping.is_set():
            refuse = "worker is shutting down"
        elif self.slots_used(pb.WORK_KIND_EXECUTION) >= self.capability.max_execution_concurrency:
            # The admin requeues this without using up an attempt.
            refuse = "executor is at capacity"
        if refuse:
            self.ack(rid, False, refuse)
            self.send(job_completed=pb.JobCompleted(
                request_id=rid, job_id=job.job_id, job_type=job.job_type, success=False, error_message=refuse))
            return
        work = Work(rid, pb.WORK_KIND_EXECUTION, job.job_id)
        with self.lock:
            self.running[rid] = work
        self.ack(rid, True)
        threading.Thread(target=self.run_execution, args=(work, request), daemon=True).start()

    def run_execution(self, work, request):
        pb = self.pb

        def progress(percent, stage, message=""):
            work.percent, work.stage = percent, stage
            update = pb.JobProgressUpdate(
                request_id=work.request_id, job_id=work.job_id, job_type=JOB_TYPE, state=pb.JOB_STATE_RUNNING,
                progress_percent=percent, stage=stage, message=message)
            update.updated_at.GetCurrentTime()
            self.send(job_progress_update=update)

        done = pb.JobCompleted(request_id=work.request_id, job_id=work.job_id, job_type=JOB_TYPE)
        try:
            progress(0.0, "starting", "started")
            result = self.handler.execute(request, progress, work.cancel)
            if work.cancel.is_set():
                raise Canceled()
            done.success = True
            done.result.CopyFrom(result)
        except Canceled:
            done.error_message = f"canceled: {work.reason}"
        except Exception as e:  # a failed job is reported, never dropped
            log.exception("job %s failed", work.job_id)
            done.error_message = str(e) or type(e).__name__
        finally:
            with self.lock:
                self.running.pop(work.request_id, None)
        done.completed_at.GetCurrentTime()
        self.send(job_completed=done)

    # -- the reconnect loop -----------------------------------------------------------

    def run(self, target):
        delay, failures = 1, 0
        while not self.stopping.is_set():
            try:
                delay = self.session(target)
                failures = 0
            except Rejected as e:
                log.error("the admin rejected this worker: %s", e)
                return 2
            except (grpc.RpcError, StopIteration, RuntimeError) as e:
                failures += 1
                log.warning("no stream to the admin (%s)", getattr(e, "details", lambda: e)())
            if self.stopping.is_set():
                break
            # Exponential backoff with full jitter, capped at 30 s; a stop ends the wait.
            self.stopping.wait(random.uniform(0, min(30, delay * 2 ** min(failures, 5))))
        return 0

    def stop(self, reason):
        """Stops for good: running work is canceled and the stream is half-closed, so
        the admin ends it cleanly (and requeues what was running) instead of seeing the
        connection drop."""
        log.info("stopping (%s)", reason)
        self.stopping.set()
        with self.lock:
            works = list(self.running.values())
            outbox = self.outbox
        for w in works:
            w.reason = f"the worker is stopping ({reason})"
            w.cancel.set()
        if outbox is not None:
            outbox.put(None)
        timer = threading.Timer(STOP_TIMEOUT, self.cancel_call)
        timer.daemon = True
        timer.start()

    def cancel_call(self):
        """Ends the stream from this side when the admin did not end it after a stop."""
        with self.lock:
            call = self.call
        if call is not None:
            log.warning("the admin did not close the stream within %ss; canceling it", STOP_TIMEOUT)
            call.cancel()


def grpc_target(admin: str) -> str:
    """`host:port` of the admin's gRPC listener: given directly (`grpc://host:port` or
    `host:port`), or looked up from its HTTP address (`http://host:port`)."""
    if admin.startswith("grpc://"):
        return admin[len("grpc://"):].rstrip("/")
    if admin.startswith("http://"):
        hostport = admin[len("http://"):].split("/")[0]
        host, _, port = hostport.rpartition(":")
        try:
            with urllib.request.urlopen(f"http://{hostport}/api/plugin/status", timeout=5) as r:
                return f"{host}:{json.load(r)['worker_grpc_port']}"
        except Exception:
            return f"{host}:{int(port) + 10000}"
    return admin


def local_address(target: str) -> str:
    """The address this machine has toward the admin (the route's source IP, found
    without sending anything), which the admin shows as the worker's address; the host
    name when there is no route."""
    host, _, port = target.rpartition(":")
    host = host.strip("[]")
    try:
        family = socket.getaddrinfo(host, int(port), type=socket.SOCK_DGRAM)[0][0]
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.connect((host, int(port)))
            return s.getsockname()[0]
    except (OSError, ValueError):
        return socket.gethostname()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--admin", default="http://127.0.0.1:23646",
                        help="grpc://host:port, host:port, or the admin's http://host:port")
    parser.add_argument("--worker-id", help="stable id (default: kept in --working-dir)")
    parser.add_argument("--working-dir", default="./data/python-worker", help="where the worker id is kept")
    parser.add_argument("--stub-dir", help="cache for the generated stubs (default: ~/.cache/plughost-python-example)")
    parser.add_argument("--proto", default=str(stubs.DEFAULT_PROTO), help="path to plugin.proto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    pb, pb_grpc = stubs.load(Path(args.proto), Path(args.stub_dir) if args.stub_dir else None)
    working_dir = Path(args.working_dir)
    working_dir.mkdir(parents=True, exist_ok=True)
    worker_id = args.worker_id
    if not worker_id:
        id_file = working_dir / "worker_id"
        if id_file.exists():
            worker_id = id_file.read_text().strip()
        else:
            worker_id = f"python-{uuid.uuid4().hex[:12]}"
            id_file.write_text(worker_id + "\n")
    target = grpc_target(args.admin)
    worker = PythonWorker(pb, pb_grpc, worker_id, address=local_address(target))

    def on_signal(signum, _frame):
        # Not in the handler itself: it may have interrupted this thread inside the
        # outbox's lock, which stop() takes.
        name = signal.Signals(signum).name
        threading.Thread(target=worker.stop, args=(name,), daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("worker %s offers %s to %s", worker_id, JOB_TYPE, target)
    return worker.run(target)


if __name__ == "__main__":
    sys.exit(main())
