/* /sessions/{id}/replay: the answers with pointer and gaze paths and a dwell heatmap over the characters. */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var match = location.pathname.match(/^\/sessions\/([^/]+)\/replay\/?$/);
  var sessionId = match ? decodeURIComponent(match[1]) : "";
  var KEY = "tacit.replay.key";

  // A browser token comes in the URL fragment (never sent to a server); an API key is pasted and kept per tab.
  function credential() {
    var fragment = new URLSearchParams(location.hash.slice(1));
    return fragment.get("token") || sessionStorage.getItem(KEY);
  }

  function seconds(response, modality) {
    return response[modality] ? TacitView.readingSeconds(response, modality).toFixed(1) : "-";
  }

  function render(data) {
    var record = data.record;
    var session = record.session;
    var score = record.score;
    $("replay").hidden = false;
    $("auth").hidden = true;
    if (!session) {
      $("query").textContent = "The trajectories of this session were removed by the retention policy.";
      return;
    }
    $("query").textContent = session.query;
    var sides = session.mode === "pairwise" ? ["left", "right"] : ["current"];
    if (score.status === "scored") {
      var p = session.mode === "pairwise" ? "P(right) = " + score.p_right.toFixed(2) : "P(current) = " + score.p_current.toFixed(2);
      $("score").textContent = "Predicted: " + score.preferred + " (" + p + ")";
    } else {
      $("score").textContent = "Score: " + score.status;
    }
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
      box.appendChild(TacitView.renderAnswer(response, { heat: ["mouse", "gaze"] }));
      side.appendChild(box);
      $("answers").appendChild(side);
    });
    document.body.dataset.done = "1";
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
  ["mouse", "gaze"].forEach(function (m) {
    $("show-" + m).addEventListener("change", function () {
      $("answers").classList.toggle("hide-" + m, !$("show-" + m).checked);
    });
  });
  show().catch(fail);
})();
