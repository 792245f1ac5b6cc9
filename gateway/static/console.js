/* The Tacit console: one page, hash routes, plain DOM and SVG. It holds no data of its own: everything is read
   from the gateway's API with the key typed at login (kept in this tab's sessionStorage). Markup is never built
   from data: text goes in with textContent only (the page's CSP allows no inline script either).

   Routes: #/login, #/sessions?<filters>, #/session/<id>, #/compare?a=&b=&bins=&common=, #/jobs */
(function () {
  "use strict";

  var KEY = "tacit.console.key";
  var REPLAY_KEY = "tacit.replay.key"; // the replay page reads the same tab's key from here
  var SVG = "http://www.w3.org/2000/svg";
  var FILTERS = ["user_id", "model_id", "mode", "abstained", "agreement", "since", "until", "limit"];
  var PAGES = ["login", "sessions", "session", "compare", "jobs"];
  var jobsTimer = null;
  var models = null; // GET /v1/reward/models, read once per login
  var cursors = [null]; // keyset cursors of the pages seen, for "previous"
  var pageIndex = 0;

  function $(id) { return document.getElementById(id); }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    if (cls) node.className = cls;
    return node;
  }

  function svg(tag, attrs, text) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) node.textContent = String(text);
    return node;
  }

  // Every finished load (or failed one) counts in body[data-loads]: a test waits for it to move on.
  var loads = 0;
  function done() {
    document.body.dataset.loading = "0";
    document.body.dataset.loads = String(++loads);
  }

  function clear(node) { while (node.firstChild) node.removeChild(node.firstChild); }

  function fixed(x, digits) { return x === null || x === undefined ? "-" : Number(x).toFixed(digits === undefined ? 3 : digits); }

  function pct(x) { return x === null || x === undefined ? "-" : (100 * x).toFixed(1) + " %"; }

  function when(iso) { return iso ? iso.replace("T", " ").replace(/(\.\d+)?(\+00:00|Z)$/, "") : "-"; }

  function labelText(mode, label) {
    if (label === null || label === undefined) return "none";
    if (mode === "pointwise") return label === 1 ? "current" : "previous";
    return label === 1 ? "right" : "left";
  }

  function agreementOf(p, label) {
    if (label === null || label === undefined) return "no_label";
    return (p >= 0.5 ? 1 : 0) === label ? "agree" : "disagree";
  }

  var AGREEMENT_TEXT = { agree: "agrees", disagree: "disagrees", no_label: "no label" };

  // --- errors and the API -----------------------------------------------------------------------------------

  function showError(message) {
    var node = $("error");
    node.textContent = message || "";
    node.hidden = !message;
  }

  function ApiError(status, problem) {
    this.status = status;
    this.problem = problem || {};
    this.message = status + " " + (this.problem.field ? this.problem.field + ": " : "") + (this.problem.detail || "request failed");
  }

  function api(path, params) {
    var url = path;
    if (params) {
      var query = new URLSearchParams();
      Object.keys(params).forEach(function (k) {
        if (params[k] !== null && params[k] !== undefined && params[k] !== "") query.set(k, params[k]);
      });
      if (query.toString()) url += "?" + query.toString();
    }
    return fetch(url, { headers: { Authorization: "Bearer " + sessionStorage.getItem(KEY), Accept: "application/json" } })
      .then(function (response) {
        return response.text().then(function (text) {
          var body = null;
          try { body = text ? JSON.parse(text) : null; } catch (e) { body = { detail: text.slice(0, 200) }; }
          if (!response.ok) {
            if (response.status === 401) { logout("The key was refused (" + ((body && body.detail) || "401") + "): log in again."); }
            throw new ApiError(response.status, body);
          }
          return body;
        });
      });
  }

  function failed(err) {
    // a refused key has already sent the page back to the login form, with the reason
    if (!(err instanceof ApiError && err.status === 401)) showError(err && err.message ? err.message : String(err));
    done();
  }

  // --- login ------------------------------------------------------------------------------------------------

  function logout(message) {
    sessionStorage.removeItem(KEY);
    sessionStorage.removeItem(REPLAY_KEY);
    models = null;
    location.hash = "#/login";
    if (message) showError(message);
  }

  $("login").addEventListener("submit", function (event) {
    event.preventDefault();
    var key = $("login-key").value.trim();
    showError("");
    // The key is checked by a read every console route needs (the read scope; admin implies it).
    fetch("/v1/console/sessions?limit=1", { headers: { Authorization: "Bearer " + key } }).then(function (response) {
      if (response.ok) {
        sessionStorage.setItem(KEY, key);
        sessionStorage.setItem(REPLAY_KEY, key);
        $("login-key").value = "";
        location.hash = "#/sessions";
        return null;
      }
      return response.json().then(function (problem) {
        var why = response.status === 403 ? "this key lacks the read scope" : problem.detail || "refused";
        showError("Log in failed (" + response.status + "): " + why + ".");
      });
    }).catch(failed);
  });

  $("logout").addEventListener("click", function () { logout(""); });

  // --- routing ----------------------------------------------------------------------------------------------

  // A link `/console#key=<key>` (e.g. printed by a script) logs in without pasting: the key goes to this tab's
  // sessionStorage and leaves the address bar and the history entry at once (a fragment never reaches a server).
  function keyFromLink() {
    var fragment = new URLSearchParams(location.hash.replace(/^#/, ""));
    if (!fragment.get("key")) return false;
    sessionStorage.setItem(KEY, fragment.get("key"));
    sessionStorage.setItem(REPLAY_KEY, fragment.get("key"));
    history.replaceState(null, "", location.pathname + "#/sessions");
    return true;
  }

  function route() {
    keyFromLink();
    var hash = location.hash.replace(/^#\/?/, "");
    var q = hash.indexOf("?");
    var path = q < 0 ? hash : hash.slice(0, q);
    var params = new URLSearchParams(q < 0 ? "" : hash.slice(q + 1));
    var parts = path.split("/");
    var page = parts[0] || "sessions";
    if (!sessionStorage.getItem(KEY)) page = "login";
    if (PAGES.indexOf(page) < 0) page = "sessions";
    if (jobsTimer) { clearInterval(jobsTimer); jobsTimer = null; }
    PAGES.forEach(function (name) { $("page-" + name).hidden = name !== page; });
    $("nav").hidden = $("logout").hidden = page === "login";
    Array.prototype.forEach.call(document.querySelectorAll("#nav a"), function (a) {
      a.classList.toggle("current", a.dataset.page === page || (page === "session" && a.dataset.page === "sessions"));
    });
    if (page !== "login") showError("");
    document.body.dataset.page = page;
    document.body.dataset.loading = "1";
    if (page === "login") { done(); $("login-key").focus(); return; }
    if (page === "sessions") return sessionsPage(params);
    if (page === "session") return sessionPage(decodeURIComponent(parts.slice(1).join("/")));
    if (page === "compare") return comparePage(params);
    if (page === "jobs") return jobsPage();
  }

  function loadModels() {
    if (models) return Promise.resolve(models);
    return api("/v1/reward/models").then(function (list) {
      models = list || [];
      return models;
    });
  }

  function modelName(m) {
    return m.id + " (" + m.task + ", " + m.model + (m.demo ? ", demo" : "") + (m.active ? ", active" : "") + ")";
  }

  function fillModelSelect(select, list, keep, first) {
    clear(select);
    if (first) select.appendChild(new Option(first, ""));
    list.forEach(function (m) { select.appendChild(new Option(modelName(m), m.id)); });
    select.value = keep || "";
    if (select.value !== (keep || "") && keep) {
      select.appendChild(new Option(keep, keep)); // a model no longer in the registry still has its scores
      select.value = keep;
    }
  }

  // --- sessions ---------------------------------------------------------------------------------------------

  function filterParams(params) {
    var out = {};
    FILTERS.forEach(function (k) { if (params.get(k)) out[k] = params.get(k); });
    return out;
  }

  function sessionsPage(params) {
    var filters = filterParams(params);
    var form = $("filters");
    FILTERS.forEach(function (k) { if (k !== "model_id") form.elements[k].value = filters[k] || (k === "limit" ? "50" : ""); });
    var key = JSON.stringify(filters);
    if (form.dataset.key !== key) { cursors = [null]; pageIndex = 0; form.dataset.key = key; }
    loadModels().then(function (list) {
      fillModelSelect(form.elements.model_id, list, filters.model_id, "current score");
    }).catch(function () { /* the table works without the registry */ });
    loadSessions(filters);
  }

  function loadSessions(filters) {
    var params = Object.assign({}, filters, { cursor: cursors[pageIndex] });
    document.body.dataset.loading = "1";
    return api("/v1/console/sessions", params).then(function (page) {
      var body = $("sessions").tBodies[0];
      clear(body);
      page.items.forEach(function (s) {
        var tr = el("tr");
        tr.dataset.sessionId = s.session_id;
        tr.appendChild(el("td", when(s.received_at)));
        var idCell = el("td");
        var link = el("a", s.session_id);
        link.href = "#/session/" + encodeURIComponent(s.session_id);
        idCell.appendChild(link);
        if (s.demo) idCell.appendChild(el("span", " demo", "muted"));
        tr.appendChild(idCell);
        tr.appendChild(el("td", s.user_id));
        tr.appendChild(el("td", s.mode));
        tr.appendChild(el("td", labelText(s.mode, s.label), s.label === null ? "none" : ""));
        tr.appendChild(el("td", s.model_id || (s.score_status === "scored" ? "-" : s.score_status), s.model_id ? "" : "none"));
        tr.appendChild(el("td", fixed(s.p), "num"));
        tr.appendChild(el("td", s.preferred || "-"));
        tr.appendChild(el("td", s.abstained === null ? "-" : s.abstained ? "yes" : "no"));
        var agreement = s.agreement;
        tr.appendChild(el("td", agreement ? AGREEMENT_TEXT[agreement] : "-", agreement || "none"));
        tr.addEventListener("dblclick", function () { location.hash = "#/session/" + encodeURIComponent(s.session_id); });
        body.appendChild(tr);
      });
      if (page.next_cursor && cursors.length === pageIndex + 1) cursors.push(page.next_cursor);
      $("next-page").disabled = !page.next_cursor;
      $("prev-page").disabled = pageIndex === 0;
      $("first-page").disabled = pageIndex === 0;
      $("page-no").textContent = "page " + (pageIndex + 1);
      $("sessions-summary").textContent = page.items.length
        ? page.items.length + " sessions on this page" + (page.next_cursor ? " (more on the next)" : "") +
          (filters.model_id ? "; scores of " + filters.model_id : "; each with its current score")
        : "No session matches these filters.";
      document.body.dataset.rows = String(page.items.length);
      done();
    }).catch(failed);
  }

  $("filters").addEventListener("submit", function (event) {
    event.preventDefault();
    var form = event.target;
    var query = new URLSearchParams();
    FILTERS.forEach(function (k) {
      var v = form.elements[k].value;
      if (v && !(k === "limit" && v === "50")) query.set(k, v);
    });
    var next = "#/sessions" + (query.toString() ? "?" + query.toString() : "");
    if (location.hash === next) route(); else location.hash = next;
  });

  $("clear").addEventListener("click", function () { location.hash = "#/sessions"; });

  $("next-page").addEventListener("click", function () {
    if (pageIndex + 1 < cursors.length) { pageIndex += 1; loadSessions(JSON.parse($("filters").dataset.key)); }
  });
  $("prev-page").addEventListener("click", function () {
    if (pageIndex > 0) { pageIndex -= 1; loadSessions(JSON.parse($("filters").dataset.key)); }
  });
  $("first-page").addEventListener("click", function () {
    pageIndex = 0; loadSessions(JSON.parse($("filters").dataset.key));
  });

  // --- one session ------------------------------------------------------------------------------------------

  function sessionPage(id) {
    $("session-title").textContent = "Session " + id;
    clear($("session-meta"));
    clear($("session-scores").tBodies[0]);
    $("replay-link").href = "/sessions/" + encodeURIComponent(id) + "/replay";
    api("/v1/sessions/" + encodeURIComponent(id), { include: "scores" }).then(function (s) {
      var score = s.score || {};
      var consent = Object.keys(s.consent || {}).filter(function (k) { return s.consent[k]; }).join(", ") || "none";
      var rows = [
        ["User", s.user_id],
        ["Task", s.task_id],
        ["Query", s.query_id || "-"],
        ["Mode", s.mode + (s.turn !== null && s.turn !== undefined ? ", turn " + s.turn : "")],
        ["Received (UTC)", when(s.received_at)],
        ["Explicit label", labelText(s.mode, s.label)],
        ["Consent", consent],
        ["Samples", s.samples],
        ["Feature set", (s.feature_set || "-") + (s.feature_set_version ? " v" + s.feature_set_version : "")],
        ["Current score", score.status === "scored"
          ? (score.preferred + " by " + score.model_version + (score.abstained ? " (abstained)" : ""))
          : score.status + (score.error ? ": " + score.error : "")],
        ["Demo session", s.demo ? "yes (recorded with a demo token)" : "no"],
      ];
      rows.forEach(function (r) {
        var tr = el("tr");
        tr.appendChild(el("th", r[0]));
        tr.appendChild(el("td", r[1]));
        $("session-meta").appendChild(tr);
      });
      var body = $("session-scores").tBodies[0];
      (s.scores || []).forEach(function (m) {
        var tr = el("tr");
        tr.dataset.modelId = m.model_id;
        var agreement = agreementOf(m.p, s.label);
        [
          [m.model_id + (m.demo_model ? " (demo)" : "")], [fixed(m.p), "num"], [fixed(m.p_population), "num"],
          [m.preferred], [fixed(m.confidence), "num"], [fixed(m.quality), "num"], [m.abstained ? "yes" : "no"],
          [m.score_kind], [m.user_labels_used, "num"], [AGREEMENT_TEXT[agreement], agreement], [when(m.scored_at)],
        ].forEach(function (c) { tr.appendChild(el("td", c[0], c[1])); });
        body.appendChild(tr);
      });
      if (!(s.scores || []).length) {
        var tr = el("tr");
        var td = el("td", "No model has scored this session yet.", "none");
        td.colSpan = 11;
        tr.appendChild(td);
        body.appendChild(tr);
      }
      done();
    }).catch(failed);
  }

  // --- model comparison -------------------------------------------------------------------------------------

  function comparePage(params) {
    var form = $("pick");
    $("comparison").hidden = true;
    loadModels().then(function (list) {
      var a = params.get("a") || (list[0] && list[0].id) || "";
      var b = params.get("b") || (list[1] && list[1].id) || a;
      fillModelSelect(form.elements.a, list, a);
      fillModelSelect(form.elements.b, list, b);
      form.elements.bins.value = params.get("bins") || "10";
      form.elements.common.checked = params.get("common") !== "0";
      if (!params.get("a") || !params.get("b")) {
        done();
        if (list.length < 2) showError("Two reward models are needed to compare: the registry lists " + list.length + ".");
        return null;
      }
      return compare(params.get("a"), params.get("b"), form.elements.bins.value, form.elements.common.checked);
    }).catch(failed);
  }

  $("pick").addEventListener("submit", function (event) {
    event.preventDefault();
    var f = event.target.elements;
    var next = "#/compare?" + new URLSearchParams({ a: f.a.value, b: f.b.value, bins: f.bins.value, common: f.common.checked ? "1" : "0" });
    if (location.hash === next) route(); else location.hash = next;
  });

  function compare(a, b, bins, common) {
    var path = function (m) { return "/v1/console/models/" + encodeURIComponent(m) + "/distribution"; };
    return Promise.all([
      api("/v1/reward/models/" + encodeURIComponent(a) + "/compare/" + encodeURIComponent(b)),
      api(path(a), { bins: bins, common_with: common ? b : null }),
      api(path(b), { bins: bins, common_with: common ? a : null }),
    ]).then(function (answers) {
      var pair = answers[0], da = answers[1], db = answers[2];
      agreementTable(pair, da, db);
      histogram($("histogram"), da, db);
      reliability($("reliability"), da, db);
      $("comparison").hidden = false;
      done();
    });
  }

  function agreementTable(pair, da, db) {
    var body = $("agreement").tBodies[0];
    clear(body);
    var head = el("tr");
    head.appendChild(el("th", ""));
    var ha = el("th", "A: " + pair.model_a, "key-a");
    var hb = el("th", "B: " + pair.model_b, "key-b");
    head.appendChild(ha);
    head.appendChild(hb);
    body.appendChild(head);
    function row(name, x, y, id) {
      var tr = el("tr");
      if (id) tr.dataset.row = id;
      tr.appendChild(el("th", name));
      tr.appendChild(el("td", x, "num"));
      tr.appendChild(el("td", y, "num"));
      body.appendChild(tr);
    }
    row("sessions scored (in total)", pair.scored_a, pair.scored_b, "scored");
    row("sessions in these charts", da.scored, db.scored, "charted");
    row("abstained", da.abstained, db.abstained);
    row("with an explicit label", da.labelled, db.labelled);
    row("agree with the label", da.agree, db.agree, "agree");
    row("disagree with the label", da.disagree, db.disagree, "disagree");
    row("no label", da.no_label, db.no_label);
    row("accuracy on labelled sessions", pct(da.accuracy), pct(db.accuracy), "accuracy");
    row("accuracy when not abstained", pct(da.accuracy_kept), pct(db.accuracy_kept));
    row("Brier score (lower is better)", fixed(da.brier), fixed(db.brier));
    var both = el("tr");
    both.dataset.row = "both";
    both.appendChild(el("th", "scored by both"));
    var cell = el("td", pair.sessions_both + " sessions; the models choose the same side on " + pair.agreeing +
      " (" + pct(pair.agreement) + "), mean |p_A - p_B| " + fixed(pair.mean_abs_p_difference) +
      "; on the " + pair.labelled + " labelled ones accuracy A " + pct(pair.accuracy_a) + ", B " + pct(pair.accuracy_b));
    cell.colSpan = 2;
    both.appendChild(cell);
    body.appendChild(both);
  }

  // chart frame: 520 x 300 with margins
  var M = { left: 48, right: 14, top: 26, bottom: 40 }, W = 520, H = 300;
  function px(x) { return M.left + x * (W - M.left - M.right); }
  function py(y) { return H - M.bottom - y * (H - M.top - M.bottom); }

  function axes(node, yMax, yLabel, xLabel) {
    for (var i = 0; i <= 4; i++) {
      var y = i / 4;
      node.appendChild(svg("line", { x1: px(0), x2: px(1), y1: py(y), y2: py(y), class: "grid-line" }));
      node.appendChild(svg("text", { x: M.left - 6, y: py(y) + 4, "text-anchor": "end" }, yMax === 1 ? y.toFixed(2) : Math.round(y * yMax)));
      node.appendChild(svg("text", { x: px(y), y: H - M.bottom + 15, "text-anchor": "middle" }, y.toFixed(2)));
    }
    node.appendChild(svg("line", { x1: px(0), x2: px(1), y1: py(0), y2: py(0), class: "axis" }));
    node.appendChild(svg("line", { x1: px(0), x2: px(0), y1: py(0), y2: py(1), class: "axis" }));
    node.appendChild(svg("text", { x: px(0.5), y: H - 6, "text-anchor": "middle" }, xLabel));
    node.appendChild(svg("text", { x: 12, y: py(0.5), transform: "rotate(-90 12 " + py(0.5) + ")", "text-anchor": "middle" }, yLabel));
  }

  function legend(node, da, db) {
    node.appendChild(svg("rect", { x: px(0), y: 6, width: 10, height: 10, class: "swatch-a" }));
    node.appendChild(svg("text", { x: px(0) + 14, y: 15 }, "A " + da.model_id + " (" + da.scored + ")"));
    node.appendChild(svg("rect", { x: px(0.5), y: 6, width: 10, height: 10, class: "swatch-b" }));
    node.appendChild(svg("text", { x: px(0.5) + 14, y: 15 }, "B " + db.model_id + " (" + db.scored + ")"));
  }

  function histogram(node, da, db) {
    clear(node);
    // shares, not counts: the two models may have scored different numbers of sessions
    function shares(d) { return d.histogram.map(function (b) { return d.scored ? b.count / d.scored : 0; }); }
    var sa = shares(da), sb = shares(db);
    var top = Math.max(0.05, Math.max.apply(null, sa.concat(sb)));
    top = Math.ceil(top / 0.04) * 0.04; // ticks at quarters of `top`: multiples of 0.01
    axes(node, 1, "share of sessions", "p (model's P(right) / P(current))");
    // y axis labels show shares up to `top`
    Array.prototype.forEach.call(node.querySelectorAll("text[text-anchor='end']"), function (t, i) { t.textContent = (top * i / 4).toFixed(2); });
    da.histogram.forEach(function (bin, i) {
      var w = (px(bin.hi) - px(bin.lo)) / 2 - 1;
      [[sa[i], "bar-a", 0, da], [sb[i], "bar-b", 1, db]].forEach(function (s) {
        var h = py(0) - py(s[0] / top);
        var rect = svg("rect", { x: px(bin.lo) + 1 + s[2] * w, y: py(0) - h, width: Math.max(w, 1), height: h, class: s[1] });
        rect.appendChild(svg("title", {}, s[3].model_id + ": " + s[3].histogram[i].count + " sessions with p in [" + bin.lo + ", " + bin.hi + ")"));
        node.appendChild(rect);
      });
    });
    legend(node, da, db);
  }

  function reliability(node, da, db) {
    clear(node);
    axes(node, 1, "observed share of label 1", "mean predicted p in the bin");
    node.appendChild(svg("line", { x1: px(0), y1: py(0), x2: px(1), y2: py(1), class: "diagonal" }));
    [[da, "a"], [db, "b"]].forEach(function (m) {
      var points = m[0].reliability.filter(function (b) { return b.labelled > 0; });
      if (points.length > 1) {
        node.appendChild(svg("polyline", {
          points: points.map(function (b) { return px(b.mean_p) + "," + py(b.observed); }).join(" "),
          class: "line-" + m[1],
        }));
      }
      var most = Math.max.apply(null, points.map(function (b) { return b.labelled; }).concat([1]));
      points.forEach(function (b) {
        var dot = svg("circle", { cx: px(b.mean_p), cy: py(b.observed), r: 3 + 4 * Math.sqrt(b.labelled / most), class: "dot-" + m[1] });
        dot.appendChild(svg("title", {}, m[0].model_id + ": " + b.labelled + " labelled sessions with p in [" + b.lo + ", " + b.hi +
          "): mean p " + fixed(b.mean_p) + ", observed " + fixed(b.observed)));
        node.appendChild(dot);
      });
    });
    legend(node, da, db);
    if (!da.labelled && !db.labelled) {
      node.appendChild(svg("text", { x: px(0.5), y: py(0.5), "text-anchor": "middle" }, "no labelled session: nothing to plot"));
    }
  }

  // --- jobs -------------------------------------------------------------------------------------------------

  function progressCell(done, total, text) {
    var td = el("td");
    if (total > 0) {
      var bar = el("span", null, "progress");
      var fill = el("span");
      fill.style.width = Math.min(100, Math.round(100 * done / total)) + "%";
      bar.appendChild(fill);
      td.appendChild(bar);
      td.appendChild(el("span", " " + done + " / " + total));
    }
    if (text) td.appendChild(el("span", (total > 0 ? " " : "") + text, "muted"));
    return td;
  }

  function jobTable(kind, title, columns, rows) {
    var box = el("div", null, "panel");
    box.dataset.kind = kind;
    box.appendChild(el("h2", title));
    if (rows.error) {
      box.appendChild(el("p", "Could not be read: " + rows.error, "error"));
      return box;
    }
    if (!rows.length) {
      box.appendChild(el("p", "None yet.", "muted"));
      return box;
    }
    var wrap = el("div", null, "table-wrap");
    var table = el("table", null, "grid");
    var head = el("tr");
    columns.forEach(function (c) { head.appendChild(el("th", c)); });
    var thead = el("thead");
    thead.appendChild(head);
    table.appendChild(thead);
    var body = el("tbody");
    rows.forEach(function (cells) {
      var tr = el("tr");
      cells.forEach(function (c) { tr.appendChild(c instanceof Node ? c : el("td", c)); });
      body.appendChild(tr);
    });
    table.appendChild(body);
    wrap.appendChild(table);
    box.appendChild(wrap);
    return box;
  }

  function statusCell(status, error) {
    var td = el("td", status, "status-" + status);
    if (error) td.title = error;
    return td;
  }

  function soft(promise) {
    return promise.catch(function (err) { var out = []; out.error = err.message || String(err); return out; });
  }

  function jobsPage() {
    loadJobs();
    jobsTimer = setInterval(loadJobs, 5000);
  }

  function loadJobs() {
    Promise.all([
      soft(api("/v1/console/imports", { limit: 50 })),
      soft(api("/v1/reward/models")),
      soft(api("/v1/reward/rescores")),
      soft(api("/v1/alignment/jobs", { limit: 50 }).then(function (p) { return p.items; })),
      soft(api("/v1/judgments/jobs", { limit: 50 }).then(function (p) { return p.jobs; })),
    ]).then(function (all) {
      var box = $("jobs");
      clear(box);
      function rows(list, f) { if (list.error) return list; return list.map(f); }
      box.appendChild(jobTable("imports", "Imports (IFLLM)", ["Job", "Status", "Progress", "Created (UTC)", "Result / error"],
        rows(all[0], function (j) {
          return [j.id, statusCell(j.status, j.error), progressCell(j.done, j.total, j.stage), when(j.created_at),
            j.error || (j.result ? Object.keys(j.result).map(function (k) { return k + " " + j.result[k]; }).join(", ") : "")];
        })));
      box.appendChild(jobTable("training", "Reward-model training", ["Model", "Task", "Estimator", "Status", "Progress", "Created (UTC)", "Error"],
        rows(all[1], function (m) {
          var p = m.progress || {};
          return [m.id + (m.active ? " (active)" : "") + (m.demo ? " (demo)" : ""), m.task, m.model, statusCell(m.status, m.error),
            progressCell(p.done || 0, p.total || 0, p.stage), when(m.created_at), m.error || ""];
        })));
      box.appendChild(jobTable("rescoring", "Rescoring (scores of stored sessions by a model)", ["Job", "Status", "Progress", "Created (UTC)", "Error"],
        rows(all[2], function (j) {
          return [j.id, statusCell(j.status, j.error), progressCell(j.done, j.total, j.stage),
            when(j.created_at), j.error || ""];
        })));
      box.appendChild(jobTable("alignment", "Alignment (SFT, DPO, robust DPO)", ["Job", "Kind", "Status", "Progress", "Created (UTC)", "Error"],
        rows(all[3], function (j) {
          var p = j.progress || {};
          var extra = [p.stage, p.loss !== null && p.loss !== undefined ? "loss " + fixed(p.loss) : ""].filter(Boolean).join(", ");
          return [j.id, j.kind, statusCell(j.status, j.error), progressCell(p.step || 0, p.total || 0, extra), when(j.created_at), j.error || ""];
        })));
      box.appendChild(jobTable("judgments", "Judgments (batch jobs of the judge)", ["Job", "Status", "Progress", "Failures", "Created (UTC)", "Error"],
        rows(all[4], function (j) {
          var created = j.created_at ? (typeof j.created_at === "number" ? new Date(j.created_at * 1000).toISOString() : j.created_at) : null;
          return [j.job_id, statusCell(j.status, j.error), progressCell(j.done, j.total, j.alignment_job_id ? "for " + j.alignment_job_id : ""),
            String(j.failures || 0), when(created), j.error || ""];
        })));
      $("jobs-updated").textContent = "Last read " + new Date().toISOString().slice(11, 19) + " UTC.";
      done();
    });
  }

  window.addEventListener("hashchange", route);
  route();
})();
