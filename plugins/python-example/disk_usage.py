"""The `disk_usage` job type: detection proposes a report for each configured
directory whose filesystem is fuller than a threshold; execution measures the
directory's top-level entries, reporting progress per entry, and returns the largest
ones. It honours cancellation between entries."""

import os
import shutil
import threading

JOB_TYPE = "disk_usage"


class Canceled(Exception):
    """The admin canceled the work (or the worker is shutting down)."""


def human(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


class DiskUsage:
    """Capability, descriptor, detect and execute for `disk_usage`."""

    def __init__(self, pb):
        self.pb = pb

    # -- values -----------------------------------------------------------------------

    def _value(self, values, name, default):
        v = values.get(name)
        kind = v.WhichOneof("kind") if v is not None else None
        if kind is None:
            return default
        if kind == "string_list":
            return list(v.string_list.values)
        if kind == "list_value":
            return [x.string_value for x in v.list_value.values]
        if kind == "duration_value":
            return v.duration_value.seconds + v.duration_value.nanos / 1e9
        return getattr(v, kind)

    # -- declaration ------------------------------------------------------------------

    def capability(self):
        return self.pb.JobTypeCapability(
            job_type=JOB_TYPE,
            can_detect=True,
            can_execute=True,
            max_detection_concurrency=1,
            max_execution_concurrency=2,
            display_name="Disk usage report (Python)",
            description="Reports what takes the space in a directory; written in Python with grpcio",
            weight=1,
        )

    def descriptor(self):
        pb = self.pb

        def field(name, label, ftype, widget, **kw):
            return pb.ConfigField(name=name, label=label, field_type=ftype, widget=widget, **kw)

        paths = field(
            "paths", "Directories", pb.CONFIG_FIELD_TYPE_LIST, pb.CONFIG_WIDGET_TEXTAREA,
            description="Directories to report on, one per line",
            help_text="Absolute paths on the worker's machine",
            placeholder="/var/lib",
            required=True,
            validation_rules=[pb.ValidationRule(
                type=pb.VALIDATION_RULE_TYPE_MIN_ITEMS, expression="1", error_message="at least 1 directory")],
        )
        threshold = field(
            "max_free_percent", "Report when free space is at most (%)",
            pb.CONFIG_FIELD_TYPE_DOUBLE, pb.CONFIG_WIDGET_NUMBER,
            description="Propose a report when the directory's filesystem has this much free space or less",
            help_text="100 reports on every run",
            min_value=pb.ConfigValue(double_value=0.0), max_value=pb.ConfigValue(double_value=100.0),
        )
        top_n = field(
            "top_n", "Largest entries to list", pb.CONFIG_FIELD_TYPE_INT64, pb.CONFIG_WIDGET_NUMBER,
            min_value=pb.ConfigValue(int64_value=1), max_value=pb.ConfigValue(int64_value=100),
        )
        pause = field(
            "pause_per_entry", "Pause between entries", pb.CONFIG_FIELD_TYPE_DURATION, pb.CONFIG_WIDGET_DURATION,
            description="Goes easy on a busy disk by pausing after each top-level entry",
            min_value=pb.ConfigValue(int64_value=0), max_value=pb.ConfigValue(int64_value=60),
        )
        form = pb.ConfigForm(
            form_id="admin",
            title="Disk usage report",
            description="Which directories to report on, and when",
            sections=[
                pb.ConfigSection(section_id="where", title="Where", fields=[paths, threshold]),
                pb.ConfigSection(section_id="report", title="Report", fields=[top_n, pause]),
            ],
        )
        form.default_values["max_free_percent"].double_value = 100.0
        form.default_values["top_n"].int64_value = 10
        form.default_values["pause_per_entry"].duration_value.seconds = 0
        return pb.JobTypeDescriptor(
            job_type=JOB_TYPE,
            display_name="Disk usage report (Python)",
            description="Reports the largest entries of directories whose filesystem fills up",
            icon="hard-drive",
            descriptor_version=1,
            admin_config_form=form,
            admin_runtime_defaults=pb.AdminRuntimeDefaults(
                enabled=True,
                detection_interval_minutes=60,
                detection_timeout_seconds=60,
                max_jobs_per_detection=50,
                global_execution_concurrency=2,
                per_worker_execution_concurrency=2,
                retry_limit=1,
                retry_backoff_seconds=30,
                job_type_max_runtime_seconds=3600,
                execution_timeout_seconds=1800,
            ),
        )

    # -- work -------------------------------------------------------------------------

    def detect(self, request, activity, cancel: threading.Event):
        """Returns the proposals; `activity(message)` reports what it sees."""
        values = request.admin_config_values
        threshold = float(self._value(values, "max_free_percent", 100.0))
        proposals = []
        for path in self._value(values, "paths", []):
            if cancel.is_set():
                raise Canceled()
            path = path.strip()
            if not path:
                continue
            real = os.path.realpath(path)
            if not os.path.isdir(real):
                activity(f"skipped {path}: not a directory")
                continue
            usage = shutil.disk_usage(real)
            free = 100.0 * usage.free / usage.total if usage.total else 100.0
            if free > threshold:
                continue
            proposals.append(self.pb.JobProposal(
                dedupe_key=real,
                job_type=JOB_TYPE,
                priority=self.pb.JOB_PRIORITY_NORMAL,
                summary=f"disk usage report for {real} ({free:.0f}% free)",
                detail=f"filesystem of {real}: {human(usage.used)} used of {human(usage.total)}",
                parameters={"path": self.pb.ConfigValue(string_value=real)},
                labels={"language": "python"},
            ))
        activity(f"{len(proposals)} directories to report on")
        return proposals

    def execute(self, request, progress, cancel: threading.Event):
        """Measures the directory; `progress(percent, stage, message)` reports. Returns
        a JobResult."""
        pb = self.pb
        path = request.job.parameters["path"].string_value
        top_n = int(self._value(request.admin_config_values, "top_n", 10))
        pause = float(self._value(request.admin_config_values, "pause_per_entry", 0.0))
        entries = sorted(os.scandir(path), key=lambda e: e.name)
        sizes = []
        for i, entry in enumerate(entries):
            if cancel.is_set():
                raise Canceled()
            sizes.append((entry.name, entry_size(entry, cancel)))
            progress(100.0 * (i + 1) / max(len(entries), 1), "measuring", f"{i + 1} of {len(entries)} entries")
            if pause > 0 and cancel.wait(pause):
                raise Canceled()
        sizes.sort(key=lambda s: s[1], reverse=True)
        total = sum(s for _, s in sizes)
        largest = [f"{name}: {human(size)}" for name, size in sizes[:top_n]]
        result = pb.JobResult(summary=f"{path} holds {human(total)} in {len(entries)} entries"
                              + (f"; largest: {largest[0]}" if largest else ""))
        result.output_values["total_bytes"].int64_value = total
        result.output_values["entries"].int64_value = len(entries)
        result.output_values["largest"].string_list.values.extend(largest)
        return result


def entry_size(entry, cancel: threading.Event) -> int:
    """Bytes under one directory entry, not following symlinks."""
    try:
        if entry.is_symlink() or not entry.is_dir(follow_symlinks=False):
            return entry.stat(follow_symlinks=False).st_size
    except OSError:
        return 0
    total = 0
    for root, dirs, files in os.walk(entry.path, followlinks=False):
        if cancel.is_set():
            raise Canceled()
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total

