/*
 * /sessions/{id}/replay: the answers with the pointer and gaze trajectories drawn over their text, a time slider
 * with play/pause that shows the trajectories up to the chosen time with a fading tail, and the per-character
 * dwell heatmap (of the shown signals, up to that time or for the whole session).
 */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var match = location.pathname.match(/^\/sessions\/([^/]+)\/replay\/?$/);
  var sessionId = match ? decodeURIComponent(match[1]) : "";
  var KEY = "tacit.replay.key";
  var HEAT_EVERY_MS = 250; // repaint the heatmap at most this often while playing (page time)

  var views = [];
  var start = 0; // page time (ms) of the first sample
  var now = 0; // replay position, ms after `start`
  var playing = false;
  var lastFrame = null;
  var heatAt = null;

  // A browser token comes in the URL fragment (never sent to a server); an API key is pasted and kept per tab.
  function credential() {
    var fragment = new URLSearchParams(location.hash.slice(1));
    return fragment.get("token") || sessionStorage.getItem(KEY);
  }

  function seconds(response, modality) {
    return response[modality] ? TacitView.readingSeconds(response, modality).toFixed(1) : "-";
  }

  function shown() {
    return ["mouse", "gaze"].filter(function (m) { return $("show-" + m).checked; });
  }

  function showScore(session, score) {
    var pairwise = session.mode === "pairwise";
    var p = pairwise ? "P(right) = " + TacitView.fixed(score.p_right) : "P(current) = " + TacitView.fixed(score.p_current);
    $("score").classList.toggle("abstained", score.status === "scored" && !!score.abstained);
    if (score.status === "scored" && score.abstained) {
      $("score").textContent = "No prediction: the model abstained on this session.";
      $("abstain-why").hidden = false;
      $("abstain-why").textContent =
        TacitView.abstainReason(score) + " (It would have leaned to " + score.preferred + ", " + p + ".)";
    } else if (score.status === "scored") {
      $("score").textContent =
        "Predicted: " + score.preferred + " (" + p + ", confidence " + TacitView.fixed(score.confidence) + ")";
    } else {
      $("score").textContent = "Score: " + score.status;
    }
  }

  /** Draw every answer at the current time; the drawn point counts go on <body> (for tests and the curious). */
  function draw(repaintHeat) {
    var modalities = shown();
    var tail = Number($("tail").value);
    var history = $("show-history").checked;
    var untilHeat = $("heat-until").checked;
    var at = start + now;
    var totals = { mouse: 0, gaze: 0 };
    if (repaintHeat || (untilHeat && (heatAt === null || Math.abs(at - heatAt) >= HEAT_EVERY_MS))) {
      views.forEach(function (view) { view.paintHeat(modalities, untilHeat ? at : undefined); });
      heatAt = at;
    }
    views.forEach(function (view) {
      var drawn = view.drawUntil(modalities, at, tail, history);
      Object.keys(drawn).forEach(function (m) { totals[m] += drawn[m]; });
    });
    $("scrub").value = String(Math.round(now));
    $("clock").textContent = (now / 1000).toFixed(1) + " s / " + (Number($("scrub").max) / 1000).toFixed(1) + " s";
    document.body.dataset.time = String(Math.round(now));
    document.body.dataset.drawnMouse = String(totals.mouse);
    document.body.dataset.drawnGaze = String(totals.gaze);
  }

  function setPlaying(on) {
    playing = on;
    $("play").textContent = on ? "Pause" : "Play";
    $("play").setAttribute("aria-label", on ? "Pause the recording" : "Play the recording");
    document.body.dataset.playing = on ? "1" : "0";
    lastFrame = null;
    if (on) requestAnimationFrame(frame);
  }

  function frame(timestamp) {
    if (!playing) return;
    if (lastFrame !== null) {
      now = Math.min(Number($("scrub").max), now + (timestamp - lastFrame) * Number($("speed").value));
    }
    lastFrame = timestamp;
    draw(false);
    if (now >= Number($("scrub").max)) {
      setPlaying(false);
      return;
    }
    requestAnimationFrame(frame);
  }

  function setUpPlayer(session) {
    var span = TacitView.timeSpan(session.responses);
    start = span[0];
    $("scrub").max = String(Math.max(0, Math.ceil((span[1] - span[0]) / 100) * 100)); // whole slider steps
    now = Number($("scrub").max); // open on the whole session; Play starts from the beginning
    ["mouse", "gaze"].forEach(function (m) {
      var recorded = session.responses.some(function (r) { return r[m] && r[m].t_page_ms.length; });
      $("show-" + m).disabled = !recorded;
      $("show-" + m).checked = recorded;
      if (!recorded) $("show-" + m).parentNode.title = "not recorded in this session";
    });
    $("scrub").addEventListener("input", function () {
      now = Number($("scrub").value);
      draw(false);
    });
    $("play").addEventListener("click", function () {
      if (!playing && now >= Number($("scrub").max)) now = 0;
      setPlaying(!playing);
    });
    ["show-mouse", "show-gaze", "heat-until"].forEach(function (id) {
      $(id).addEventListener("change", function () { draw(true); });
    });
    ["show-history", "tail"].forEach(function (id) {
      $(id).addEventListener("change", function () { draw(false); });
    });
    document.addEventListener("keydown", function (event) {
      var target = event.target;
      if (event.key !== " " || (target && /^(INPUT|SELECT|TEXTAREA|BUTTON)$/.test(target.tagName) && target.type !== "range")) {
        return;
      }
      event.preventDefault();
      $("play").click();
    });
    window.addEventListener("resize", function () {
      views.forEach(function (view) { view.invalidate(); });
      draw(false);
    });
    draw(true);
  }

  function render(data) {
    var record = data.record;
    var session = record.session;
    var score = record.score;
    $("replay").hidden = false;
    $("auth").hidden = true;
    if (!session) {
      $("query").textContent = "The trajectories of this session were removed by the retention policy.";
      $("player").hidden = true;
      return;
    }
    $("query").textContent = session.query;
    var sides = session.mode === "pairwise" ? ["left", "right"] : ["current"];
    showScore(session, score);
    var explicit = session.feedback && session.feedback.preference;
    $("meta").textContent =
      "user " + record.user_id + " · " + record.samples + " samples · explicit preference: " + (explicit || "none") +
      " · consent: " + Object.keys(record.consent).filter(function (k) { return record.consent[k]; }).join(", ");
    var head = TacitView.el("tr");
    ["", "pointer on text (s)", "gaze on text (s)"].forEach(function (h) { head.appendChild(TacitView.el("th", null, h)); });
    $("stats").appendChild(head);
    session.responses.forEach(function (response, i) {
      var tr = TacitView.el("tr");
      [sides[i], seconds(response, "mouse"), seconds(response, "gaze")].forEach(function (c) {
        tr.appendChild(TacitView.el("td", null, c));
      });
      $("stats").appendChild(tr);
      var side = TacitView.el("div", "side");
      side.appendChild(TacitView.el("h3", null, sides[i] + (response.model ? " · " + response.model : "")));
      var box = TacitView.el("div", "box full");
      var view = new TacitView.AnswerView(response);
      views.push(view);
      box.appendChild(view.wrap);
      side.appendChild(box);
      $("answers").appendChild(side);
    });
    // positions are read from the layout: once it is done
    requestAnimationFrame(function () {
      setUpPlayer(session);
      document.body.dataset.done = "1";
    });
  }

  async function show() {
    $("error").hidden = true;
    var key = credential();
    if (!key) {
      $("auth").hidden = false;
      return;
    }
    var res = await fetch("/v1/collector/sessions/" + encodeURIComponent(sessionId), {
      headers: { Authorization: "Bearer " + key },
    });
    var data = await res.json();
    if (!res.ok) {
      if (res.status === 401) sessionStorage.removeItem(KEY);
      $("auth").hidden = res.status !== 401;
      throw new Error(data.detail || "could not read the session (" + res.status + ")");
    }
    render(data);
  }

  function fail(err) {
    $("error").hidden = false;
    $("error").textContent = err && err.message ? err.message : String(err);
  }

  $("session-id").textContent = sessionId;
  $("auth").addEventListener("submit", function (event) {
    event.preventDefault();
    sessionStorage.setItem(KEY, $("auth-key").value.trim());
    show().catch(fail);
  });
  show().catch(fail);
})();
