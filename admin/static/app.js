// Plughost pages: progressive enhancement only. Every page works without this file;
// it adds (1) live updates over Server-Sent Events, (2) visible_when_* field visibility,
// (3) local and relative times, (4) "/" to focus the job search, (5) logs that follow
// their newest line, (6) tabs that switch without a reload (the job type page), (7) an
// "Add row" button for key/value editors. No framework, nothing fetched from elsewhere.
(function () {
  "use strict";

  // Set by the live updates below: called with a panel swapped in by a tab switch and the
  // event id the server rendered it at.
  var onSwap = function () {};

  // ---- "/" focuses the job search (the jobs page's own filter, else the header's) ----

  document.addEventListener("keydown", function (e) {
    if (e.key !== "/" || e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(t.tagName))) return;
    var search = document.getElementById("filter-text") || document.getElementById("job-search");
    if (!search) return;
    e.preventDefault();
    search.focus();
    search.select();
  });

  // ---- field visibility (visible_when_field / visible_when_equals) ----------------

  // The current value of a named control in a form, as the server compares values:
  // checkboxes as "true"/"false", everything else as its text.
  function controlValue(form, name) {
    var inputs = form.querySelectorAll('[name="' + CSS.escape(name) + '"]');
    var value = null;
    inputs.forEach(function (el) {
      if (el.type === "checkbox") {
        value = el.checked ? "true" : (value === null ? "false" : value);
      } else if (el.type === "hidden") {
        if (value === null) value = el.value;
      } else if (el.type === "radio") {
        if (el.checked) value = el.value;
      } else {
        value = el.value;
      }
    });
    return value;
  }

  function sameValue(actual, expected) {
    if (actual === null) return false;
    if (actual === expected) return true;
    var a = Number(actual), b = Number(expected);
    return actual.trim() !== "" && expected.trim() !== "" && !isNaN(a) && !isNaN(b) && a === b;
  }

  function applyVisibility(form) {
    form.querySelectorAll("[data-visible-when-field]").forEach(function (field) {
      var show = sameValue(controlValue(form, field.dataset.visibleWhenField), field.dataset.visibleWhenValue);
      field.hidden = !show;
    });
  }

  function setUpVisibility(root) {
    root.querySelectorAll("form").forEach(function (form) {
      if (!form.querySelector("[data-visible-when-field]")) return;
      form.classList.add("js-visibility");
      applyVisibility(form);
      form.addEventListener("input", function () { applyVisibility(form); });
      form.addEventListener("change", function () { applyVisibility(form); });
    });
  }
  setUpVisibility(document);

  // ---- key/value editors: "Add row" copies an empty row ------------------------------

  function setUpKeyValues(root) {
    root.querySelectorAll("[data-kv]").forEach(function (kv) {
      var add = kv.querySelector("[data-kv-add]");
      if (!add || add.dataset.ready) return;
      add.dataset.ready = "1";
      add.hidden = false;
      add.addEventListener("click", function () {
        var empty = kv.querySelector(".kv-row[data-kv-empty]");
        if (!empty) return;
        var row = empty.cloneNode(true);
        var n = kv.querySelectorAll(".kv-row").length + 1;
        row.classList.remove("kv-invalid");
        row.querySelectorAll("input").forEach(function (input) {
          input.value = "";
          input.removeAttribute("id");
          input.removeAttribute("aria-invalid");
          input.removeAttribute("aria-describedby");
          var label = input.getAttribute("aria-label");
          if (label) input.setAttribute("aria-label", label.replace(/row \d+$/, "row " + n));
        });
        kv.insertBefore(row, add);
        row.querySelector("input").focus();
      });
    });
  }
  setUpKeyValues(document);

  // ---- times ---------------------------------------------------------------------

  function relative(ms) {
    var d = Math.round((Date.now() - ms) / 1000);
    var future = d < 0;
    var s = Math.abs(d);
    var text;
    if (s < 2) return future ? "now" : "just now";
    if (s < 60) text = s + " s";
    else if (s < 3600) text = Math.floor(s / 60) + " min";
    else if (s < 86400) text = Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
    else text = Math.floor(s / 86400) + " d";
    return future ? "in " + text : text + " ago";
  }

  function localTime(ms) {
    var d = new Date(ms);
    var sameDay = d.toDateString() === new Date().toDateString();
    return sameDay ? d.toLocaleTimeString() : d.toLocaleString();
  }

  function renderTimes(root) {
    root.querySelectorAll("time[data-ms]").forEach(function (t) {
      var ms = Number(t.dataset.ms);
      if (!ms) return;
      t.textContent = t.hasAttribute("data-relative") ? relative(ms) : localTime(ms);
      t.title = new Date(ms).toLocaleString();
    });
  }
  renderTimes(document);
  setInterval(function () {
    document.querySelectorAll("time[data-relative]").forEach(function (t) {
      var ms = Number(t.dataset.ms);
      if (ms) t.textContent = relative(ms);
    });
  }, 1000);

  // A flash status belongs to the action that caused it: drop it from the address so a
  // reload does not show it again.
  if (window.history && window.history.replaceState && /[?&](ok|error)=/.test(location.search)) {
    var params = new URLSearchParams(location.search);
    params.delete("ok");
    params.delete("error");
    var q = params.toString();
    history.replaceState(null, "", location.pathname + (q ? "?" + q : "") + location.hash);
  }

  // ---- tabs: a tab's page fetched and its panel swapped in ----------------------------

  // The tab bar (data-tabs names the panel) holds plain links: without this script each
  // one loads its tab's page. Here the panel is swapped instead, and the address follows
  // (replaceState: Back still leaves the page, as it would have before the switch).
  var tabBar = document.querySelector("[data-tabs]");
  var tabRequest = 0;
  function switchTab(href) {
    var panel = document.getElementById(tabBar.dataset.tabs);
    var mine = ++tabRequest;
    if (panel) panel.classList.add("loading");
    fetch(href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        if (mine !== tabRequest) return;
        var doc = new DOMParser().parseFromString(html, "text/html");
        var next = doc.getElementById(tabBar.dataset.tabs);
        var nextBar = doc.querySelector("[data-tabs]");
        if (!panel || !next || !nextBar) { location.href = href; return; }
        history.replaceState(null, "", href);
        document.title = doc.title;
        // A status shown for an earlier action does not belong to the new tab.
        var flash = document.getElementById("flash");
        if (flash) flash.remove();
        var fresh = document.importNode(next, true);
        panel.replaceWith(fresh);
        tabBar.replaceChildren.apply(tabBar, Array.from(nextBar.childNodes).map(function (n) {
          return document.importNode(n, true);
        }));
        document.querySelectorAll("a[data-here]").forEach(function (a) { a.href = href; });
        enhance(fresh);
        onSwap(fresh, Number(doc.body.dataset.lastEventId) || 0);
      })
      .catch(function () { if (mine === tabRequest) location.href = href; });
  }
  if (tabBar && window.fetch && window.DOMParser && window.history && history.replaceState) {
    tabBar.addEventListener("click", function (e) {
      var a = e.target.closest("a[data-tab]");
      if (!a || e.button !== 0 || e.ctrlKey || e.metaKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      if (a.getAttribute("aria-current") === "page") return;
      switchTab(a.href);
    });
  }

  // ---- logs ------------------------------------------------------------------------

  // A log box (data-tail) shows its newest lines: scrolled to the bottom at first, and
  // kept there as lines arrive unless the reader scrolled up.
  function atBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 24;
  }
  function toBottom(root) {
    root.querySelectorAll("[data-tail]").forEach(function (box) { box.scrollTop = box.scrollHeight; });
  }
  toBottom(document);

  // What a swapped-in panel needs of the above.
  function enhance(root) {
    renderTimes(root);
    setUpVisibility(root);
    setUpKeyValues(root);
    toBottom(root);
  }

  // ---- live updates ----------------------------------------------------------------

  // Looked up on every event: a tab switch brings other regions.
  function liveRegions() {
    return Array.prototype.slice.call(document.querySelectorAll("[data-live], [data-live-reveal]"));
  }
  var hasJobRows = document.querySelector("[data-job-row]") !== null;
  if (!window.EventSource || !window.fetch || (liveRegions().length === 0 && !hasJobRows)) return;

  // The newest event this page has handled: a panel rendered before it missed it.
  var lastSeen = Number(document.body.dataset.lastEventId) || 0;
  onSwap = function (panel, renderedAt) {
    if (lastSeen <= renderedAt) return;
    panel.querySelectorAll("[data-live][id]").forEach(schedule);
  };

  var status = document.getElementById("live-status");
  function setStatus(text, cls) {
    if (!status) return;
    status.hidden = false;
    status.textContent = text;
    status.className = "live-status " + cls;
  }

  function words(s) {
    return (s || "").split(/\s+/).filter(Boolean);
  }

  // The job type and job id an event is about ("" when it is not about one).
  function subject(name, data) {
    switch (name) {
      case "job": return { type: data.job.job_type, id: data.job.job_id };
      case "activity": return { type: data.activity.job_type, id: data.activity.job_id };
      case "detection_started":
      case "config_saved":
      case "descriptor_saved": return { type: data.job_type, id: "" };
      case "detection_finished": return { type: data.run.job_type, id: data.run.job_id || "" };
      default: return { type: "", id: "" };
    }
  }

  function concerns(region, about) {
    var t = region.dataset.liveJobType, id = region.dataset.liveJobId;
    if (t && about.type && t !== about.type) return false;
    if (id && id !== about.id) return false;
    return true;
  }

  // A line of a job's output (the feed leaves these out; the job's log shows them).
  function isOutput(a) {
    return a.source === "executor" && !!a.job_id && /^(stdout|stderr): /.test(a.message || "");
  }

  // Regions are refreshed by fetching this page again and swapping in their new HTML
  // (rendered and escaped by the server). At most one fetch runs at a time; events that
  // arrive meanwhile are folded into the next one.
  // A region with data-live-every="<ms>" (the charts) is refreshed at most that often.
  var dirty = new Set();
  var timer = null;
  var inFlight = false;
  var lastRefresh = {};
  var deferred = {};

  function schedule(region) {
    var every = Number(region.dataset.liveEvery) || 0;
    var wait = every ? (lastRefresh[region.id] || 0) + every - Date.now() : 0;
    if (wait > 0) {
      if (!deferred[region.id]) {
        deferred[region.id] = setTimeout(function () {
          delete deferred[region.id];
          schedule(region);
        }, wait);
      }
      return;
    }
    lastRefresh[region.id] = Date.now();
    dirty.add(region.id);
    if (!timer && !inFlight) timer = setTimeout(refresh, 250);
  }

  function refresh() {
    timer = null;
    if (dirty.size === 0) return;
    var ids = Array.from(dirty);
    dirty.clear();
    inFlight = true;
    fetch(location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        ids.forEach(function (id) {
          var now = document.getElementById(id);
          var next = doc.getElementById(id);
          if (!now || !next) return;
          // Boxes the operator ticked (rows selected for a replay) stay ticked.
          var ticked = {};
          now.querySelectorAll('input[type="checkbox"][id]').forEach(function (b) { ticked[b.id] = b.checked; });
          // Boxes opened by the reader stay open; a log at its bottom stays there.
          var open = {};
          now.querySelectorAll("details").forEach(function (d, i) { open[i] = d.open; });
          var following = Array.prototype.map.call(now.querySelectorAll("[data-tail]"), atBottom);
          // Keep a region's place and identity; take its new contents.
          now.replaceChildren.apply(now, Array.from(next.childNodes).map(function (n) {
            return document.importNode(n, true);
          }));
          now.querySelectorAll('input[type="checkbox"][id]').forEach(function (b) {
            if (Object.prototype.hasOwnProperty.call(ticked, b.id)) b.checked = ticked[b.id];
          });
          now.querySelectorAll("details").forEach(function (d, i) { if (open[i]) d.open = true; });
          now.querySelectorAll("[data-tail]").forEach(function (box, i) {
            if (following[i] !== false) box.scrollTop = box.scrollHeight;
          });
          renderTimes(now);
        });
      })
      .catch(function () { /* the next event tries again */ })
      .then(function () {
        inFlight = false;
        if (dirty.size > 0 && !timer) timer = setTimeout(refresh, 500);
      });
  }

  function updateJobRows(job) {
    var rows = document.querySelectorAll('[data-job-row="' + CSS.escape(job.job_id) + '"]');
    rows.forEach(function (row) {
      var changed = row.dataset.state !== job.state;
      row.dataset.state = job.state;
      var state = row.querySelector('[data-field="state"]');
      if (state) {
        state.textContent = job.state;
        state.className = "badge state-" + job.state;
      }
      var pct = Math.max(0, Math.min(100, Number(job.progress_percent) || 0));
      var text = (Math.abs(pct - Math.round(pct)) < 0.05 ? Math.round(pct) : pct.toFixed(1)) + "";
      var bar = row.querySelector('[data-field="progress"]');
      if (bar) bar.value = pct;
      var label = row.querySelector('[data-field="progress-text"]');
      if (label) label.textContent = text + "%";
      var stage = row.querySelector('[data-field="stage"]');
      if (stage) stage.textContent = job.stage || "";
      var message = row.querySelector('[data-field="message"]');
      if (message) message.textContent = job.message || "";
      var worker = row.querySelector('[data-field="worker"]');
      if (worker) worker.textContent = job.worker_id || "";
      var attempt = row.querySelector('[data-field="attempt"]');
      if (attempt) attempt.textContent = job.attempt;
      row.classList.add("flash-row");
      setTimeout(function () { row.classList.remove("flash-row"); }, 600);
      // A new state may change the row's actions: re-render the regions holding it.
      if (changed) {
        liveRegions().forEach(function (r) { if (r.contains(row) && r.id) schedule(r); });
      }
    });
    return rows.length > 0;
  }

  function handle(name, data) {
    var about = subject(name, data);
    var known = false;
    if (name === "job") known = updateJobRows(data.job);
    var output = name === "activity" && isOutput(data.activity);
    liveRegions().forEach(function (region) {
      if (!concerns(region, about)) return;
      if (output && region.hasAttribute("data-live-no-output")) return;
      if (words(region.dataset.liveReveal).indexOf(name) >= 0) {
        region.hidden = false;
        return;
      }
      if (!region.id) return;
      if (words(region.dataset.live).indexOf(name) >= 0) schedule(region);
      else if (name === "job" && !known && region.hasAttribute("data-live-new-jobs")) schedule(region);
    });
  }

  var names = ["job", "activity", "worker_joined", "worker_left", "worker_drain", "heartbeat",
    "detection_started", "detection_finished", "config_saved", "descriptor_saved"];
  // Replay from the moment the page was rendered; on reconnects the browser sends
  // Last-Event-ID itself, which the admin prefers over the query parameter.
  var since = document.body.dataset.lastEventId;
  var source = new EventSource("/api/plugin/events" + (since ? "?last_event_id=" + encodeURIComponent(since) : ""));
  source.onopen = function () { setStatus("live", "on"); };
  source.onerror = function () { setStatus("reconnecting…", "off"); };
  names.forEach(function (name) {
    source.addEventListener(name, function (e) {
      var data;
      try { data = JSON.parse(e.data); } catch (err) { return; }
      lastSeen = Math.max(lastSeen, Number(e.lastEventId) || 0);
      handle(name, data);
    });
  });
  // The admin could not replay what this page missed: refresh every live region.
  source.addEventListener("reset", function () {
    liveRegions().forEach(function (r) { if (r.id && r.hasAttribute("data-live")) schedule(r); });
  });
  window.addEventListener("pagehide", function () { source.close(); });
})();
