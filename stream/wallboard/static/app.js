/* cxstream wallboard: renders the state pushed on /events (server-sent events).
   Vanilla JS, no build step. Every text from the server goes through textContent. */
(function () {
  "use strict";

  var ALL = "*";
  var SVG = "http://www.w3.org/2000/svg";
  var params = new URLSearchParams(window.location.search);
  var token = params.get("token");
  var chosenWindow = params.get("window");
  var chosenQueue = params.get("queue") || ALL;
  var state = null;
  var source = null;
  var lastMessageAt = 0;
  var connected = false;

  // -- helpers -----------------------------------------------------------------------------
  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function clockText(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes()) + ":" + pad(d.getSeconds());
  }

  function shortTime(ms) {
    var d = new Date(ms);
    return pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function duration(ms) {
    var s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + " min";
    var h = Math.floor(m / 60);
    if (h < 48) return h + " h " + pad(m % 60) + " min";
    return Math.floor(h / 24) + " d";
  }

  function url(path, extra) {
    var q = new URLSearchParams();
    if (token) q.set("token", token);
    Object.keys(extra || {}).forEach(function (k) { if (extra[k]) q.set(k, extra[k]); });
    var s = q.toString();
    return path + (s ? "?" + s : "");
  }

  function formatValue(spec, value) {
    if (value === null || value === undefined) return "\u2014";
    if (spec.unit === "percent") return Math.round(value * 100) + "%";
    var r = Math.round(value);
    return (r > 0 ? "+" : r < 0 ? "\u2212" : "") + Math.abs(r);
  }

  function formatInterval(spec, interval) {
    if (!interval) return "";
    if (spec.unit === "percent") {
      return Math.round(interval[0] * 100) + "\u2013" + Math.round(interval[1] * 100) + "%";
    }
    return formatValue(spec, interval[0]) + " to " + formatValue(spec, interval[1]);
  }

  function formatCount(n) {
    return n >= 10000 ? (n / 1000).toFixed(0) + "k" : String(Math.round(n));
  }

  function setParam(name, value, fallback) {
    var q = new URLSearchParams(window.location.search);
    if (value && value !== fallback) q.set(name, value); else q.delete(name);
    var s = q.toString();
    window.history.replaceState(null, "", window.location.pathname + (s ? "?" + s : ""));
  }

  // -- queue operations (waiting, longest wait, service level, abandonment, agents) ---------
  function waitText(seconds) {
    if (seconds === null || seconds === undefined) return "\u2014";
    var s = Math.round(seconds);
    if (s < 60) return s + " s";
    var m = Math.floor(s / 60);
    if (m < 60) return m + ":" + pad(s % 60);
    return Math.floor(m / 60) + " h " + pad(m % 60);
  }

  function pct(value) {
    return value === null || value === undefined ? "\u2014" : Math.round(value * 100) + "%";
  }

  // key, label, status key, value text, meta text
  var OPS = [
    ["waiting", "Waiting now", "waiting",
      function (o) { return String(o.waiting); },
      function (o) { return o.open ? "contacts in queue" : "closed \u00b7 outside business hours"; }],
    ["longest_wait", "Longest wait", "waiting",
      function (o) { return waitText(o.longest_wait_s); },
      function (o) { return "limit " + waitText(o.longest_wait_limit_s); }],
    ["service_level", "Service level", "service_level",
      function (o) { return pct(o.service_level); },
      function (o) {
        return "target " + pct(o.service_level_target) + " in " + waitText(o.service_level_threshold_s) +
          " \u00b7 n=" + formatCount(o.offered);
      }],
    ["abandon", "Abandoned", "abandon",
      function (o) { return pct(o.abandon); },
      function (o) { return "speed of answer " + waitText(o.answer_wait_s); }],
    ["agents", "Agents free / busy", null,
      function (o) { return o.agents.available + " / " + o.agents.busy; },
      function (o) { return o.agents.away ? o.agents.away + " away" : "available / on contacts"; }],
  ];

  function opsStatus(ops, key) {
    if (!key) return "empty";
    return (ops.status && ops.status[key]) || "empty";
  }

  function opsTile(view, item) {
    var ops = view.ops;
    var status = opsStatus(ops, item[2]);
    var cls = "tile ops-tile status-" + status;
    if (item[0] === "service_level" && ops.low_confidence && ops.service_level !== null) cls += " low-confidence";
    var alert = ops.alerts && ops.alerts[item[0]];
    if (alert) cls += " has-alert";
    var node = el("div", cls);
    node.dataset.queue = view.queue;
    node.dataset.ops = item[0];
    node.dataset.status = status;
    if (alert) node.dataset.alert = alert;
    node.appendChild(el("div", "label", item[1]));
    node.appendChild(el("div", "value", item[3](ops)));
    node.appendChild(el("div", "meta", item[4](ops)));
    return node;
  }

  function opsCell(view, item) {
    var ops = view.ops;
    var status = opsStatus(ops, item[2]);
    var alert = ops.alerts && ops.alerts[item[0]];
    var td = el("td", "ops-cell status-" + status + (alert ? " has-alert" : ""));
    td.dataset.queue = view.queue;
    td.dataset.ops = item[0];
    td.dataset.status = status;
    if (alert) td.dataset.alert = alert;
    td.appendChild(el("div", "value", item[3](ops)));
    return td;
  }

  var OPS_COLUMNS = ["waiting", "longest_wait", "service_level", "abandon", "agents"];
  var OPS_HEADS = { waiting: "Waiting", longest_wait: "Longest", service_level: "Service",
    abandon: "Abandon", agents: "Agents" };
  var OPS_TITLES = { waiting: "contacts waiting now", longest_wait: "longest wait now",
    service_level: "service level: answered within the threshold", abandon: "abandoned (short abandons left out)",
    agents: "agents available / busy (on a contact or after-contact work)" };

  // -- sparkline ---------------------------------------------------------------------------
  function sparkline(values, spec) {
    var box = el("div", "spark");
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("viewBox", "0 0 100 30");
    svg.setAttribute("preserveAspectRatio", "none");
    svg.setAttribute("aria-hidden", "true");
    box.appendChild(svg);
    var nums = (values || []).filter(function (v) { return v !== null && v !== undefined; });
    if (nums.length < 2) return box;
    var lo = Math.min.apply(null, nums);
    var hi = Math.max.apply(null, nums);
    // A flat line sits in the middle; small moves are not blown up to full height.
    var minSpan = spec.unit === "percent" ? 0.04 : 4;
    if (hi - lo < minSpan) {
      var mid = (hi + lo) / 2;
      lo = mid - minSpan / 2;
      hi = mid + minSpan / 2;
    }
    var n = values.length;
    var step = 100 / Math.max(1, n - 1);
    var segments = [];
    var current = [];
    values.forEach(function (v, i) {
      if (v === null || v === undefined) {
        if (current.length) segments.push(current);
        current = [];
        return;
      }
      var x = n === 1 ? 100 : i * step;
      var y = 28 - ((v - lo) / (hi - lo)) * 26;
      current.push([x, y]);
    });
    if (current.length) segments.push(current);
    segments.forEach(function (seg) {
      if (seg.length < 2) return;
      var pts = seg.map(function (p) { return p[0].toFixed(2) + "," + p[1].toFixed(2); }).join(" ");
      var area = document.createElementNS(SVG, "polygon");
      area.setAttribute("class", "area");
      area.setAttribute(
        "points",
        seg[0][0].toFixed(2) + ",30 " + pts + " " + seg[seg.length - 1][0].toFixed(2) + ",30"
      );
      svg.appendChild(area);
      var line = document.createElementNS(SVG, "polyline");
      line.setAttribute("points", pts);
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.appendChild(line);
    });
    return box;
  }

  // -- rendering ----------------------------------------------------------------------------
  function tileClasses(base, tile) {
    var cls = base + " status-" + (tile ? tile.status : "empty");
    if (tile && tile.low_confidence && tile.value !== null) cls += " low-confidence";
    if (tile && tile.alert) cls += " has-alert";
    return cls;
  }

  function markTile(node, view, spec, tile) {
    node.dataset.queue = view.queue;
    node.dataset.kpi = spec.key;
    node.dataset.status = tile.status;
    node.dataset.low = tile.low_confidence ? "1" : "0";
    if (tile.alert) node.dataset.alert = tile.alert;
  }

  function heroTile(view, spec, tile, windowLabel) {
    var node = el("div", tileClasses("tile", tile));
    markTile(node, view, spec, tile);
    node.appendChild(el("div", "label", spec.label));
    var value = el("div", "value", formatValue(spec, tile.value));
    value.dataset.value = tile.value === null ? "" : String(tile.value);
    node.appendChild(value);
    var count = tile.value === null
      ? "no " + spec.sample_noun + " \u00b7 " + windowLabel
      : "n=" + formatCount(tile.n) + " \u00b7 " + windowLabel;
    node.appendChild(el("div", "meta", count));
    var meta = el("div", "meta");
    if (tile.alert) meta.appendChild(el("span", "badge firing", "ALERT"));
    if (tile.value !== null && tile.low_confidence) {
      meta.appendChild(el("span", "badge low", "LOW CONFIDENCE"));
    } else if (tile.interval) {
      var ci = formatInterval(spec, tile.interval);
      meta.appendChild(document.createTextNode((tile.alert ? "CI " : "95% CI ") + ci));
    }
    node.appendChild(meta);
    node.title = spec.label + ": n=" + tile.n + " " + spec.sample_noun;
    node.appendChild(sparkline(tile.trend, spec));
    return node;
  }

  function queueCell(view, spec, tile) {
    var td = el("td", tileClasses("", tile));
    markTile(td, view, spec, tile);
    var cell = el("div", "cell");
    var value = el("div", "value", formatValue(spec, tile.value));
    value.dataset.value = tile.value === null ? "" : String(tile.value);
    cell.appendChild(value);
    var side = el("div", "side");
    side.appendChild(sparkline(tile.trend, spec));
    var n = "n=" + formatCount(tile.n);
    if (tile.value !== null && tile.low_confidence) n += " \u00b7 low";
    side.appendChild(el("div", "n", n));
    cell.appendChild(side);
    td.appendChild(cell);
    if (tile.interval) td.title = spec.label + " 95% interval " + formatInterval(spec, tile.interval);
    return td;
  }

  function renderWindows() {
    var nav = document.getElementById("windows");
    nav.textContent = "";
    state.windows.forEach(function (w) {
      var b = el("button", w === state.window ? "active" : "", w);
      b.type = "button";
      b.dataset.window = w;
      b.addEventListener("click", function () {
        if (w === chosenWindow) return;
        chosenWindow = w;
        setParam("window", w, state.default_window);
        connect();
      });
      nav.appendChild(b);
    });
  }

  function renderAlerts() {
    var box = document.getElementById("alerts");
    box.textContent = "";
    var alerts = state.alerts || [];
    box.dataset.count = String(alerts.length);
    if (!alerts.length) {
      box.appendChild(el("div", "alerts-none", "No active alerts"));
      return;
    }
    var maxShown = 4;
    alerts.slice(0, maxShown).forEach(function (a) {
      var sev = String(a.severity || "alert").toLowerCase();
      var row = el("div", "alert-row sev-" + sev + (a.acked ? " acked" : ""));
      row.dataset.alertId = a.id;
      row.appendChild(el("span", "sev", sev));
      var where = a.tile && a.tile.queue !== ALL ? " on " + a.tile.queue : "";
      var summary = a.summary || (a.rule || a.id) + where;
      row.appendChild(el("span", "summary", summary));
      var since = "";
      if (typeof a.since === "number") {
        since = "since " + shortTime(a.since) + " (" + duration(state.server_time - a.since) + ")";
      }
      if (a.acked && a.acked.by) since += " \u00b7 acked by " + a.acked.by;
      row.appendChild(el("span", "since", since));
      box.appendChild(row);
    });
    if (alerts.length > maxShown) {
      box.appendChild(el("div", "alerts-more", "+ " + (alerts.length - maxShown) + " more alerts firing"));
    }
  }

  function render() {
    if (!state || !state.data) return;
    document.body.classList.remove("loading");
    var windowLabel = state.window;
    var body = state.data[windowLabel];
    if (!body) return;
    var specs = state.tiles;
    var views = body.queues;
    var byQueue = {};
    views.forEach(function (v) { byQueue[v.queue] = v; });
    var focus = byQueue[chosenQueue] || byQueue[ALL] || views[0];
    var title = focus ? focus.label : "All queues";

    document.getElementById("scope-queue").textContent = title;
    document.title = "CX wallboard \u00b7 " + title + " \u00b7 " + windowLabel;
    renderWindows();
    renderAlerts();

    var opsBox = document.getElementById("ops");
    opsBox.textContent = "";
    if (focus && focus.ops) {
      OPS.forEach(function (item) { opsBox.appendChild(opsTile(focus, item)); });
    }

    var hero = document.getElementById("hero");
    hero.textContent = "";
    if (focus) {
      specs.forEach(function (spec) { hero.appendChild(heroTile(focus, spec, focus.tiles[spec.key], windowLabel)); });
    }

    var head = document.getElementById("queue-head");
    head.textContent = "";
    head.appendChild(el("th", "", "Queue \u00b7 " + windowLabel));
    OPS_COLUMNS.forEach(function (key) {
      var th = el("th", "ops-head", OPS_HEADS[key]);
      th.title = OPS_TITLES[key];
      head.appendChild(th);
    });
    specs.forEach(function (spec) { head.appendChild(el("th", "", spec.label)); });

    var rows = document.getElementById("queue-rows");
    rows.textContent = "";
    views.forEach(function (view) {
      var tr = el("tr", (view.queue === ALL ? "all" : "") + (focus && view.queue === focus.queue ? " selected" : ""));
      tr.dataset.queue = view.queue;
      var name = el("td", "qname", view.label);
      if (view.alerts) name.appendChild(el("span", "alert-count", String(view.alerts)));
      name.title = "Show " + view.label + " in the big tiles";
      name.addEventListener("click", function () {
        chosenQueue = view.queue;
        setParam("queue", view.queue === ALL ? null : view.queue, null);
        render();
      });
      tr.appendChild(name);
      OPS.forEach(function (item) {
        if (view.ops && OPS_COLUMNS.indexOf(item[0]) >= 0) tr.appendChild(opsCell(view, item));
      });
      specs.forEach(function (spec) { tr.appendChild(queueCell(view, spec, view.tiles[spec.key])); });
      rows.appendChild(tr);
    });

    fitToScreen();
    document.getElementById("legend-low").textContent = "low confidence (n < " + state.min_samples + ")";
    var workers = state.workers || [];
    var live = workers.filter(function (w) { return !w.stale; }).length;
    var wtext = live + (live === 1 ? " worker" : " workers");
    var parts = state.partitions || {};
    if (parts.total) {
      var missing = (parts.missing || []).length;
      var stale = (parts.stale || []).length;
      wtext += " \u00b7 " + (parts.total - missing) + "/" + parts.total + " partitions";
      if (stale) wtext += " (" + stale + " not updated for a while)";
    }
    document.getElementById("workers").textContent = wtext;
    document.body.dataset.updatedAt = String(state.updated_at || "");
    renderStatus();
  }

  // Step down the sizes until every queue row fits: a TV cannot scroll.
  function fitToScreen() {
    var box = document.querySelector(".queues");
    var classes = document.body.classList;
    classes.remove("compact", "dense");
    if (box.scrollHeight <= box.clientHeight + 1) return;
    classes.add("compact");
    if (box.scrollHeight <= box.clientHeight + 1) return;
    classes.remove("compact");
    classes.add("dense");
  }

  function renderStatus() {
    var now = Date.now();
    document.getElementById("clock").textContent = clockText(now);
    var banner = document.getElementById("stale");
    var updated = document.getElementById("updated");
    var problem = null;
    var silentFor = lastMessageAt ? now - lastMessageAt : 0;
    var maxSilence = Math.max(10000, ((state && state.interval_s) || 2) * 4000);
    if (state && state.redis && !state.redis.ok) {
      problem = state.redis.stale_since
        ? "Data stale since " + clockText(state.redis.stale_since) + " \u2014 Redis unreachable, retrying"
        : "No data \u2014 Redis unreachable, retrying";
    } else if (lastMessageAt && (!connected || silentFor > maxSilence)) {
      problem = "Data stale since " + clockText(state && state.updated_at ? state.updated_at : lastMessageAt) +
        " \u2014 connection to the wallboard server lost, reconnecting";
    } else if (!lastMessageAt && source && !connected) {
      problem = "Cannot reach the wallboard server, retrying";
    }
    var wasHidden = banner.hidden;
    if (problem) {
      banner.textContent = problem;
      banner.hidden = false;
      document.body.classList.add("is-stale");
    } else {
      banner.hidden = true;
      document.body.classList.remove("is-stale");
    }
    if (wasHidden !== banner.hidden && state) fitToScreen();
    if (state && state.updated_at) {
      updated.textContent = "updated " + clockText(state.updated_at);
    }
  }

  // -- live updates ---------------------------------------------------------------------------
  function connect() {
    if (source) source.close();
    connected = false;
    var es = new EventSource(url("events", { window: chosenWindow }));
    source = es;
    es.addEventListener("open", function () {
      if (es !== source) return;
      connected = true;
      renderStatus();
    });
    es.addEventListener("state", function (event) {
      if (es !== source) return;
      connected = true;
      lastMessageAt = Date.now();
      var next = JSON.parse(event.data);
      if (!next || !next.data) return;
      state = next;
      if (!chosenWindow) chosenWindow = state.window;
      render();
      document.body.dataset.version = event.lastEventId || "";
    });
    es.addEventListener("error", function () {
      if (es !== source) return;
      connected = false;
      renderStatus();
      // The browser retries by itself unless the server answered with an error status.
      if (es.readyState === EventSource.CLOSED) {
        window.setTimeout(function () { if (es === source) connect(); }, 5000);
      }
    });
  }

  window.setInterval(renderStatus, 1000);
  window.addEventListener("resize", function () { if (state) fitToScreen(); });
  connect();
})();
