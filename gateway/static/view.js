/*
 * Drawing a recorded answer: a dwell heatmap over its characters and the pointer and gaze trajectories over its
 * text. Shared by the demo (after submitting) and the replay page. All text goes in through textContent.
 *
 * Trajectories are placed on the characters the samples were over (`char_index`), not at their recorded pixels:
 * a recording made in another layout (IFLLM's own page, another window width) still lands on the words that were
 * read. Samples over no character, and gaps longer than a second, break the line.
 */
(function (global) {
  "use strict";

  var CAP_MS = 1000; // the features' "one-second smoothing": a sample lasts until the next one, at most 1 s
  var SVG = "http://www.w3.org/2000/svg";
  var MODALITIES = ["mouse", "gaze"];

  /**
   * Milliseconds spent on each character of `text` by one stream (capped intervals, as the features count).
   * With `spread`, each sample's time is shared by the characters up to `spread` away on its line, weighted by
   * distance: a reader takes in a few characters around the point, not one. `untilMs` (page time) stops early.
   */
  function dwell(text, stream, into, spread, untilMs) {
    var out = into || new Float64Array(text.length + 1);
    if (!stream) return out;
    var s = spread || 0;
    var t = stream.t_page_ms;
    var until = untilMs === undefined ? Infinity : untilMs;
    for (var i = 0; i + 1 < t.length; i++) {
      if (t[i] >= until) break;
      var k = stream.char_index[i];
      var dt = Math.min(t[i + 1], until) - t[i];
      if (k < 0 || k > text.length || !(dt > 0)) continue;
      var lo = k;
      var hi = k;
      while (lo > 0 && k - lo < s && text[lo - 1] !== "\n") lo--;
      while (hi < text.length - 1 && hi - k < s && text[hi + 1] !== "\n") hi++;
      var total = 0;
      for (var j = lo; j <= hi; j++) total += s + 1 - Math.abs(j - k);
      for (j = lo; j <= hi; j++) out[j] += (Math.min(dt, CAP_MS) * (s + 1 - Math.abs(j - k))) / total;
    }
    return out;
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function svgEl(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (name) { node.setAttribute(name, attrs[name]); });
    return node;
  }

  /**
   * One answer on the page: its text (heat-coloured spans), and an SVG layer for trajectories over it.
   * `response` is a Session response ({text, mouse, gaze}).
   */
  function AnswerView(response, options) {
    options = options || {};
    this.response = response;
    this.text = response.text;
    this.wrap = el("div", "answer-wrap");
    this.p = el("p", options.className || "answer-text");
    this.svg = svgEl("svg", { class: "paths" });
    this.wrap.appendChild(this.p);
    this.wrap.appendChild(this.svg);
    this.invalidate();
    this.paintHeat(options.heat || MODALITIES);
  }

  /** Colour each character by the dwell of the chosen streams (runs of one shade in one span). */
  AnswerView.prototype.paintHeat = function (modalities, untilMs) {
    var text = this.text;
    var response = this.response;
    var heat = new Float64Array(text.length + 1);
    modalities.forEach(function (m) { dwell(text, response[m], heat, 4, untilMs); });
    var max = 0;
    for (var i = 0; i < heat.length; i++) max = Math.max(max, heat[i]);
    function level(k) {
      return max > 0 && heat[k] > 0 ? Math.max(1, Math.round(Math.sqrt(heat[k] / max) * 8)) : 0;
    }
    // A 2,000-character answer stays a few hundred nodes.
    var fragment = document.createDocumentFragment();
    this.starts = [];
    this.nodes = [];
    var start = 0;
    for (var k = 1; k <= text.length; k++) {
      if (k === text.length || level(k) !== level(start)) {
        var span = el("span", null, text.slice(start, k));
        var lv = level(start);
        if (lv) {
          span.className = "heat";
          span.style.backgroundColor = "rgba(255, 120, 0, " + (lv / 8) * 0.75 + ")";
          span.title = Math.round(heat[start]) + " ms";
        }
        fragment.appendChild(span);
        this.starts.push(start);
        this.nodes.push(span.firstChild);
        start = k;
      }
    }
    // the colours change, not the layout: laid-out positions stay valid (`place` reads `nodes` lazily)
    this.p.replaceChildren(fragment);
    this.p.dataset.heat = modalities.join(",");
  };

  /** Forget laid-out positions (after a resize or a repaint). */
  AnswerView.prototype.invalidate = function () {
    this.places = {};
    this.tracks = {};
  };

  /** Centre of character `k` in the layer's pixels, or null when it has no box (past the end, an empty line). */
  AnswerView.prototype.place = function (k) {
    if (k in this.places) return this.places[k];
    var found = null;
    if (k >= 0 && k < this.text.length) {
      var lo = 0;
      var hi = this.starts.length - 1;
      while (lo < hi) {
        var mid = (lo + hi + 1) >> 1;
        if (this.starts[mid] <= k) lo = mid;
        else hi = mid - 1;
      }
      var node = this.nodes[lo];
      var offset = k - this.starts[lo];
      if (node && offset < node.length) {
        var range = document.createRange();
        range.setStart(node, offset);
        range.setEnd(node, offset + 1);
        var rects = range.getClientRects();
        var r = rects.length ? rects[0] : null;
        if (r && (r.width > 0 || r.height > 0)) {
          var origin = this.wrap.getBoundingClientRect();
          found = { x: r.left - origin.left + r.width / 2, y: r.top - origin.top + r.height / 2 };
        }
      }
    }
    this.places[k] = found;
    return found;
  };

  /**
   * One stream as drawable points: [{t, x, y}] in page milliseconds, with null where the line breaks (a sample on
   * no character, or more than a second without a sample).
   */
  AnswerView.prototype.track = function (modality) {
    if (this.tracks[modality]) return this.tracks[modality];
    var stream = this.response[modality];
    var out = [];
    if (stream) {
      var last = null;
      for (var i = 0; i < stream.t_page_ms.length; i++) {
        var t = stream.t_page_ms[i];
        var at = this.place(stream.char_index[i]);
        if (!at || (last !== null && t - last > CAP_MS)) {
          if (out.length && out[out.length - 1] !== null) out.push(null);
        }
        if (at) out.push({ t: t, x: at.x, y: at.y });
        last = t;
      }
    }
    this.tracks[modality] = out;
    return out;
  };

  /** Size the SVG layer to the text (after layout). */
  AnswerView.prototype.fit = function () {
    this.svg.setAttribute("width", this.p.offsetWidth);
    this.svg.setAttribute("height", this.p.offsetHeight);
  };

  /** Polyline point strings of `points` (null breaks a line). */
  function lines(points) {
    var out = [];
    var current = [];
    points.forEach(function (q) {
      if (q === null) {
        if (current.length > 1) out.push(current.join(" "));
        current = [];
      } else {
        current.push(q.x.toFixed(1) + "," + q.y.toFixed(1));
      }
    });
    if (current.length > 1) out.push(current.join(" "));
    return out;
  }

  /** The whole of each stream, as static lines (the demo's result). */
  AnswerView.prototype.drawAll = function (modalities) {
    var svg = this.svg;
    svg.replaceChildren();
    this.fit();
    var self = this;
    modalities.forEach(function (m) {
      lines(self.track(m)).forEach(function (points) {
        svg.appendChild(svgEl("polyline", { points: points, class: "path-" + m }));
      });
    });
  };

  /**
   * The streams up to page time `nowMs`: the last `tailMs` as a line that fades with age, a dot where the point
   * is now, and (with `history`) everything before the tail as a faint line. Answers how many points were drawn.
   */
  AnswerView.prototype.drawUntil = function (modalities, nowMs, tailMs, history) {
    var svg = this.svg;
    svg.replaceChildren();
    this.fit();
    var drawn = {};
    var self = this;
    modalities.forEach(function (m) {
      var group = svgEl("g", { class: "trail trail-" + m });
      var old = [];
      var tail = [];
      var count = 0;
      var previous = null;
      var points = self.track(m);
      for (var i = 0; i < points.length; i++) {
        var q = points[i];
        if (q === null) {
          old.push(null);
          previous = null;
          continue;
        }
        if (q.t > nowMs) break;
        count++;
        var age = nowMs - q.t;
        if (age > tailMs) {
          if (history) old.push(q);
        } else if (previous !== null) {
          // one short line per step, more opaque the newer it is
          tail.push(
            svgEl("polyline", {
              points: previous.x.toFixed(1) + "," + previous.y.toFixed(1) + " " + q.x.toFixed(1) + "," + q.y.toFixed(1),
              class: "path-" + m + " tail",
              "stroke-opacity": (0.12 + 0.88 * (1 - age / tailMs)).toFixed(2),
            })
          );
        }
        previous = q;
      }
      lines(old).forEach(function (pts) {
        group.appendChild(svgEl("polyline", { points: pts, class: "path-" + m + " history" }));
      });
      tail.forEach(function (line) { group.appendChild(line); });
      if (previous !== null && nowMs - previous.t <= CAP_MS) {
        group.appendChild(
          svgEl("circle", { cx: previous.x.toFixed(1), cy: previous.y.toFixed(1), r: 6, class: "head head-" + m })
        );
      }
      svg.appendChild(group);
      drawn[m] = count;
    });
    return drawn;
  };

  /** The first and last page time over both streams of these responses, in ms ([0, 0] when none). */
  function timeSpan(responses) {
    var lo = Infinity;
    var hi = -Infinity;
    responses.forEach(function (r) {
      MODALITIES.forEach(function (m) {
        var t = r[m] && r[m].t_page_ms;
        if (t && t.length) {
          lo = Math.min(lo, t[0]);
          hi = Math.max(hi, t[t.length - 1]);
        }
      });
    });
    return lo <= hi ? [lo, hi] : [0, 0];
  }

  /**
   * An answer with its heatmap and its whole trajectories (the demo's result): returns the element; the lines are
   * drawn once it is laid out, and again when the window is resized.
   */
  function renderAnswer(response, options) {
    options = options || {};
    var view = new AnswerView(response, options);
    if (options.paths !== false) {
      var draw = function () {
        view.invalidate();
        view.drawAll(MODALITIES);
      };
      requestAnimationFrame(draw);
      global.addEventListener("resize", draw);
    }
    view.wrap.view = view;
    return view.wrap;
  }

  /** Seconds with a character under the point (the "focused engagement" the features count). */
  function readingSeconds(response, modality) {
    var d = dwell(response.text, response[modality]);
    var total = 0;
    for (var i = 0; i < d.length; i++) total += d[i];
    return total / 1000;
  }

  /** A number with two decimals, or "-" when there is none. */
  function fixed(value) {
    return typeof value === "number" && isFinite(value) ? value.toFixed(2) : "-";
  }

  /** Why a score abstained, in words (its `abstain_reason`, with the session's data quality when known). */
  function abstainReason(score) {
    var quality = typeof score.quality === "number" ? " (" + fixed(score.quality) + ")" : "";
    if (score.abstain_reason === "no_behaviour_samples") {
      return "Why: no pointer or gaze samples were recorded over the answers, so there was no reading to measure. " +
        "Move the pointer along the text as you read.";
    }
    if (score.abstain_reason === "quality_below_gate") {
      return "Why: the recording's data quality" + quality + " is below the gate the model was validated at, so " +
        "its guess would not be reliable. The quality measures the gaze signal (gaze samples inside the answers, " +
        "the head inside the camera box, how far the gaze got through the text) and the number of samples: a " +
        "pointer-only recording has no gaze and scores low on it.";
    }
    return "The model did not say why" + (quality ? "; data quality" + quality : "") + ".";
  }

  global.TacitView = {
    AnswerView: AnswerView,
    abstainReason: abstainReason,
    dwell: dwell,
    el: el,
    fixed: fixed,
    readingSeconds: readingSeconds,
    renderAnswer: renderAnswer,
    timeSpan: timeSpan,
  };
})(window);
