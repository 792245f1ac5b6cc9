/*
 * Drawing a recorded answer: a dwell heatmap over its characters and the mouse and gaze paths over its box.
 * Shared by the demo (after submitting) and the replay page. All text goes in through textContent.
 */
(function (global) {
  "use strict";

  var CAP_MS = 1000; // the features' "one-second smoothing": a sample lasts until the next one, at most 1 s
  var SVG = "http://www.w3.org/2000/svg";

  /**
   * Milliseconds spent on each character of `text` by one stream (capped intervals, as the features count).
   * With `spread`, each sample's time is shared by the characters up to `spread` away on its line, weighted by
   * distance: a reader takes in a few characters around the point, not one.
   */
  function dwell(text, stream, into, spread) {
    var out = into || new Float64Array(text.length + 1);
    if (!stream) return out;
    var s = spread || 0;
    var t = stream.t_page_ms;
    for (var i = 0; i + 1 < t.length; i++) {
      var k = stream.char_index[i];
      var dt = t[i + 1] - t[i];
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

  /** Polyline segments of a stream in box coordinates; a sample outside the box ends a segment. */
  function segments(stream) {
    var out = [];
    var current = [];
    if (!stream) return out;
    for (var i = 0; i < stream.x.length; i++) {
      var x = stream.x[i];
      var y = stream.y[i];
      if (x === -1 && y === -1) {
        if (current.length) out.push(current);
        current = [];
      } else {
        current.push(x.toFixed(1) + "," + y.toFixed(1));
      }
    }
    if (current.length) out.push(current);
    return out;
  }

  /**
   * An answer with its heatmap (per-character dwell of the chosen streams) and paths. `response` is a
   * Session response ({text, mouse, gaze}); options: {heat: ["mouse", "gaze"], paths: true, className}.
   */
  function renderAnswer(response, options) {
    options = options || {};
    var heatOf = options.heat || ["mouse", "gaze"];
    var text = response.text;
    var wrap = el("div", "answer-wrap");
    var p = el("p", options.className || "answer-text");
    var heat = new Float64Array(text.length + 1);
    heatOf.forEach(function (m) { dwell(text, response[m], heat, 4); });
    var max = 0;
    for (var i = 0; i < heat.length; i++) max = Math.max(max, heat[i]);
    // Runs of equal shade in one span: a 2,000-character answer stays a few hundred nodes.
    var start = 0;
    function level(k) {
      return max > 0 && heat[k] > 0 ? Math.max(1, Math.round(Math.sqrt(heat[k] / max) * 8)) : 0;
    }
    for (var k = 1; k <= text.length; k++) {
      if (k === text.length || level(k) !== level(start)) {
        var span = el("span", null, text.slice(start, k));
        var lv = level(start);
        if (lv) {
          span.className = "heat";
          span.style.backgroundColor = "rgba(255, 120, 0, " + (lv / 8) * 0.75 + ")";
          span.title = Math.round(heat[start]) + " ms";
        }
        p.appendChild(span);
        start = k;
      }
    }
    wrap.appendChild(p);
    if (options.paths !== false) {
      var svg = document.createElementNS(SVG, "svg");
      svg.setAttribute("class", "paths");
      wrap.appendChild(svg);
      // Sized after layout: the paths are in the recorded box's own pixels (its origin plus scroll).
      requestAnimationFrame(function () {
        svg.setAttribute("width", p.scrollWidth);
        svg.setAttribute("height", p.scrollHeight);
      });
      ["mouse", "gaze"].forEach(function (m) {
        segments(response[m]).forEach(function (points) {
          var line = document.createElementNS(SVG, "polyline");
          line.setAttribute("points", points.join(" "));
          line.setAttribute("class", "path-" + m);
          svg.appendChild(line);
        });
      });
    }
    return wrap;
  }

  /** Seconds with a character under the point (the "focused engagement" the features count). */
  function readingSeconds(response, modality) {
    var d = dwell(response.text, response[modality]);
    var total = 0;
    for (var i = 0; i < d.length; i++) total += d[i];
    return total / 1000;
  }

  global.TacitView = { dwell: dwell, renderAnswer: renderAnswer, readingSeconds: readingSeconds, el: el };
})(window);
