/* The /demo page: consent, two answers recorded with the Tacit SDK, explicit preference, predicted preference. */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var samples = [];
  var token = null;
  var recorder = null;
  var question = null; // {id, question, answers: [left, right], models?}

  function fail(where, err) {
    where.hidden = false;
    where.textContent = err && err.message ? err.message : String(err);
  }

  async function getToken() {
    if (token && token.expires_at > Date.now() / 1000 + 30) return token;
    var res = await fetch("/demo/token", { method: "POST" });
    if (!res.ok) throw new Error("could not get a recording token (" + res.status + ")");
    token = await res.json();
    return token;
  }

  async function authed(url, init) {
    var tok = await getToken();
    init = init || {};
    init.headers = Object.assign({ Authorization: "Bearer " + tok.token }, init.headers || {});
    return fetch(url, init);
  }

  async function load() {
    var res = await fetch("/demo/samples");
    var data = await res.json();
    samples = data.samples;
    samples.forEach(function (s, i) {
      var option = TacitView.el("option", null, s.question);
      option.value = String(i);
      $("sample").appendChild(option);
    });
    var wanted = Number(new URLSearchParams(location.search).get("sample"));
    if (wanted >= 0 && wanted < samples.length) $("sample").value = String(wanted);
    $("ask").hidden = !data.llm;
    // Gaze only with a WebGazer-compatible tracker on the page, and only when the user ticks it.
    if (window.webgazer) {
      $("consent-gaze").disabled = false;
      $("gaze-note").hidden = true;
    }
    $("consent-gaze").addEventListener("change", function () {
      $("consent-camera").disabled = !$("consent-gaze").checked;
      if (!$("consent-gaze").checked) $("consent-camera").checked = false;
    });
  }

  async function startReading() {
    $("consent-error").hidden = true;
    var consent = {
      mouse: $("consent-mouse").checked,
      gaze: $("consent-gaze").checked,
      camera: $("consent-camera").checked,
    };
    if (!consent.mouse && !consent.gaze) throw new Error("Choose at least one signal to record.");
    if (!question) {
      var s = samples[Number($("sample").value) || 0];
      question = { id: s.id, question: s.question, answers: s.answers };
    }
    $("query").textContent = question.question;
    $("answer-left").textContent = question.answers[0];
    $("answer-right").textContent = question.answers[1];
    $("consent").hidden = true;
    $("reading").hidden = false;
    recorder = Tacit.collector({ token: await getToken(), tokenUrl: "/demo/token", consent: consent });
    await recorder.start({ query: question.question, taskId: "demo-" + question.id, models: question.models });
    $("recording-status").textContent = "Recording.";
    document.body.dataset.recording = "1";
  }

  async function ask(event) {
    event.preventDefault();
    var text = $("ask-input").value.trim();
    if (!text) return;
    $("ask-button").disabled = true;
    try {
      var res = await authed("/demo/answers", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ question: text }),
      });
      var data = await res.json();
      if (!res.ok) throw new Error(data.detail || "the LLM endpoint failed");
      question = { id: "asked", question: data.question, answers: data.answers, models: data.models };
      await startReading();
    } catch (err) {
      fail($("consent-error"), err);
    } finally {
      $("ask-button").disabled = false;
    }
  }

  async function collected(sessionId) {
    // Scoring is deferred when a service is briefly down: wait for it a little.
    for (var i = 0; i < 60; i++) {
      var res = await authed("/v1/collector/sessions/" + encodeURIComponent(sessionId));
      if (res.ok) {
        var data = await res.json();
        if (data.record.score.status !== "pending") return data;
      }
      await new Promise(function (r) { setTimeout(r, 500); });
    }
    throw new Error("the session was stored but is still waiting for a score");
  }

  function feature(data, name) {
    if (!data.features) return null;
    var i = data.features.names.indexOf(name);
    return i < 0 ? null : data.features.values[i];
  }

  function showResult(data, explicit) {
    var score = data.record.score;
    var session = data.record.session;
    $("reading").hidden = true;
    $("result").hidden = false;
    $("score").classList.toggle("abstained", score.status === "scored" && !!score.abstained);
    $("abstain-why").hidden = true;
    if (score.status === "scored" && score.abstained) {
      // The probabilities are still in the answer (what the model would say); shown as such, never as a prediction.
      $("score").textContent = "No prediction: the model abstained on this session.";
      $("abstain-why").hidden = false;
      $("abstain-why").textContent = TacitView.abstainReason(score);
      $("explicit").textContent =
        "You said: " + explicit + ". Had it not abstained, the model would have leaned to the " + score.preferred +
        " answer (P(right) = " + TacitView.fixed(score.p_right) + "); do not read that as a prediction.";
    } else if (score.status === "scored") {
      $("score").textContent =
        "Predicted from your reading: " + score.preferred + " answer (P(right) = " + TacitView.fixed(score.p_right) + ")";
      $("explicit").textContent =
        "You said: " + explicit + ". " + (score.preferred === explicit ? "The prediction agrees." : "The prediction disagrees.") +
        " Confidence " + TacitView.fixed(score.confidence) +
        (score.quality === null || score.quality === undefined ? "" : ", data quality " + TacitView.fixed(score.quality)) + ".";
    } else {
      $("score").textContent = "Stored, but not scored: " + score.status;
    }
    document.body.dataset.abstained = score.abstained ? "1" : "0";
    $("model-note").textContent = score.demo_model
      ? "Scored by a demo reward model trained on simulated readers (" + score.model_version + ")."
      : "Scored by reward model " + (score.model_version || "?") + ".";
    var rows = [
      ["", "left", "right"],
      ["pointer time on text (s)"].concat(session.responses.map(function (r) { return TacitView.readingSeconds(r, "mouse").toFixed(1); })),
      ["samples in the box"].concat(["left", "right"].map(function (side) { return feature(data, "mouse_onscreen_points_" + side); })),
    ];
    rows.forEach(function (cells, i) {
      var tr = TacitView.el("tr");
      cells.forEach(function (c) { tr.appendChild(TacitView.el(i === 0 ? "th" : "td", null, c === null ? "-" : String(c))); });
      $("stats").appendChild(tr);
    });
    session.responses.forEach(function (response, i) {
      var side = TacitView.el("div", "side");
      side.appendChild(TacitView.el("h3", null, i === 0 ? "Answer A (left)" : "Answer B (right)"));
      var box = TacitView.el("div", "box full");
      box.appendChild(TacitView.renderAnswer(response, { heat: ["mouse", "gaze"] }));
      side.appendChild(box);
      $("heatmaps").appendChild(side);
    });
    $("replay-link").href =
      "/sessions/" + encodeURIComponent(score.session_id) + "/replay#token=" + encodeURIComponent(token.token);
    document.body.dataset.sessionId = score.session_id;
    document.body.dataset.done = "1";
  }

  async function submit(event) {
    event.preventDefault();
    $("submit-error").hidden = true;
    var checked = document.querySelector("input[name=preference]:checked");
    if (!checked || !recorder) return;
    $("submit").disabled = true;
    try {
      var answer = await recorder.submit({ preference: checked.value });
      token = recorder.token; // the recorder renews an expired token: read back with the one it sent with
      showResult(await collected(answer.session_id), checked.value);
    } catch (err) {
      $("submit").disabled = false;
      fail($("submit-error"), err);
    }
  }

  $("start").addEventListener("click", function () {
    startReading().catch(function (err) { fail($("consent-error"), err); });
  });
  $("ask").addEventListener("submit", ask);
  $("feedback").addEventListener("submit", submit);
  document.querySelectorAll("input[name=preference]").forEach(function (input) {
    input.addEventListener("change", function () { $("submit").disabled = !recorder; });
  });
  load().catch(function (err) { fail($("consent-error"), err); });
})();
