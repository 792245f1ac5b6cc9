/*
 * Tacit browser collector: records how answers are read (pointer, and gaze when a WebGazer-compatible provider
 * is present and the user opted in) and sends one Session per question to the Tacit gateway.
 *
 * Plain JavaScript, no build step, no dependencies. Usage:
 *
 *   <p data-tacit-answer="left">...</p> <p data-tacit-answer="right">...</p>
 *   <script src="/sdk/tacit.js"></script>
 *   const rec = Tacit.collector({ tokenUrl: "/my-backend/tacit-token", consent: { mouse: true } });
 *   await rec.start({ query: "the question", taskId: "chat-42" });
 *   const score = await rec.submit({ preference: "left" });
 *
 * What is recorded follows the IFLLM study (spec section 10.2): one sample per tick (10-15 Hz) for every answer
 * box and modality: the point relative to the box (plus its scroll offset) or (-1, -1) outside it, the index of
 * the character under the point and the up-to-10-characters-each-side window on the same rendered line, the page
 * time (hidden-tab time removed), the epoch time and the head-in-box flag.
 */
(function (global) {
  "use strict";

  var WINDOW_HALF = 10;
  var MAX_SAMPLES = 200000; // the gateway refuses longer streams (tacit/schemas/session.py)
  var FACE_BOX_ID = "webgazerFaceFeedbackBox";
  var FACE_BOX_GREEN = "rgb(0, 128, 0)"; // WebGazer paints the face box border green when the head is inside it

  // --- page timer: ms since this script loaded, without the time the tab was hidden ---------------------------
  var t0 = performance.now();
  var hiddenMs = 0;
  var hiddenSince = document.visibilityState === "hidden" ? t0 : null;
  document.addEventListener("visibilitychange", function () {
    var now = performance.now();
    if (document.visibilityState === "hidden") {
      if (hiddenSince === null) hiddenSince = now;
    } else if (hiddenSince !== null) {
      hiddenMs += now - hiddenSince;
      hiddenSince = null;
    }
  });
  function pageTime() {
    var now = performance.now();
    var hidden = hiddenMs + (hiddenSince === null ? 0 : now - hiddenSince);
    return Math.max(0, Math.round((now - t0 - hidden) * 100) / 100);
  }

  // --- pointer: the last position seen, as the reference site did (it sampled on its own clock) ----------------
  var pointer = null;
  function onPointer(e) {
    pointer = { x: e.clientX, y: e.clientY };
  }
  document.addEventListener("mousemove", onPointer, { capture: true, passive: true });
  document.addEventListener("pointermove", onPointer, { capture: true, passive: true });

  // --- text geometry ----------------------------------------------------------------------------------------

  /** The text nodes of an answer element and where each starts in its textContent. */
  function textMap(el) {
    var nodes = [];
    var starts = [];
    var total = 0;
    var walker = document.createTreeWalker(el, NodeFilter.SHOW_TEXT);
    for (var node = walker.nextNode(); node; node = walker.nextNode()) {
      nodes.push(node);
      starts.push(total);
      total += node.data.length;
    }
    return { nodes: nodes, starts: starts, text: el.textContent };
  }

  /** (node, offset) of a character index of the answer text. */
  function locate(map, index) {
    var lo = 0;
    var hi = map.nodes.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (map.starts[mid] <= index) lo = mid;
      else hi = mid - 1;
    }
    return { node: map.nodes[lo], offset: index - map.starts[lo] };
  }

  var range = document.createRange();
  /** The layout box of one character, or null (a character with no box, e.g. collapsed). */
  function charRect(map, index) {
    var at = locate(map, index);
    if (!at.node || at.offset + 1 > at.node.data.length) return null;
    range.setStart(at.node, at.offset);
    range.setEnd(at.node, at.offset + 1);
    var rects = range.getClientRects();
    return rects.length ? rects[0] : null;
  }

  function caretAt(x, y) {
    if (document.caretPositionFromPoint) {
      var pos = document.caretPositionFromPoint(x, y);
      return pos ? { node: pos.offsetNode, offset: pos.offset } : null;
    }
    if (document.caretRangeFromPoint) {
      var r = document.caretRangeFromPoint(x, y);
      return r ? { node: r.startContainer, offset: r.startOffset } : null;
    }
    return null;
  }

  /** Index into the answer text of the caret under (x, y), or -1 when the caret is not in this answer's text. */
  function charIndexAt(map, x, y) {
    var caret = caretAt(x, y);
    if (!caret || caret.node.nodeType !== Node.TEXT_NODE) return -1;
    var i = map.nodes.indexOf(caret.node);
    return i < 0 ? -1 : map.starts[i] + caret.offset;
  }

  /**
   * Up to 10 characters each side of `index` on the same rendered line, trimmed (spec 10.2 step 4). The caret
   * may sit at a line's end (on its newline, or past the last character): the window is then the characters
   * before it on that line.
   */
  function windowAt(map, index) {
    var text = map.text;
    if (index < 0 || index > text.length) return "";
    var here = index < text.length && text[index] !== "\n";
    var anchor = here ? index : index - 1;
    if (anchor < 0 || text[anchor] === "\n") return "";
    var box = charRect(map, anchor);
    if (!box) return "";
    var lo = anchor;
    while (lo > 0 && index - (lo - 1) <= WINDOW_HALF && text[lo - 1] !== "\n") {
      var left = charRect(map, lo - 1);
      if (!left || Math.abs(left.top - box.top) >= 1) break; // the line above
      lo -= 1;
    }
    var hi = here ? index + 1 : index;
    while (here && hi < text.length && hi - index <= WINDOW_HALF && text[hi] !== "\n") {
      var right = charRect(map, hi);
      if (!right || Math.abs(right.bottom - box.bottom) >= 1) break; // the line below
      hi += 1;
    }
    return text.slice(lo, hi).trim();
  }

  /** The part of an element that can be seen: its box clipped by scrolling ancestors and the viewport. */
  function visibleRect(el) {
    var r = el.getBoundingClientRect();
    var box = { left: r.left, top: r.top, right: r.right, bottom: r.bottom, rect: r };
    for (var p = el.parentElement; p && p !== document.documentElement; p = p.parentElement) {
      var style = getComputedStyle(p);
      if (style.overflowX === "visible" && style.overflowY === "visible") continue;
      var c = p.getBoundingClientRect();
      box.left = Math.max(box.left, c.left);
      box.top = Math.max(box.top, c.top);
      box.right = Math.min(box.right, c.right);
      box.bottom = Math.min(box.bottom, c.bottom);
    }
    box.right = Math.min(box.right, window.innerWidth);
    box.bottom = Math.min(box.bottom, window.innerHeight);
    return box;
  }

  /**
   * One sample of a point over one answer box: relative position (box origin plus its scroll offset, rounded
   * to 0.01 px) or (-1, -1) outside the visible box; character index and window, or (-1, "") when none.
   */
  function measure(el, map, point) {
    if (!point) return { x: -1, y: -1, index: -1, window: "" };
    var box = visibleRect(el);
    var inside = point.x >= box.left && point.x <= box.right && point.y >= box.top && point.y <= box.bottom;
    if (!inside || box.right <= box.left || box.bottom <= box.top) return { x: -1, y: -1, index: -1, window: "" };
    var x = Math.round((point.x - box.rect.left + el.scrollLeft) * 100) / 100;
    var y = Math.round((point.y - box.rect.top + el.scrollTop) * 100) / 100;
    var index = charIndexAt(map, point.x, point.y);
    var win = index < 0 ? "" : windowAt(map, index);
    if (!win) index = -1; // the schema pairs "no character" with an empty window
    return { x: x, y: y, index: index, window: win };
  }

  // --- streams ----------------------------------------------------------------------------------------------

  function newStream(withHead) {
    var s = { x: [], y: [], char_index: [], window: [], t_page_ms: [], t_epoch_ms: [] };
    if (withHead) s.head_in_box = [];
    return s;
  }

  function push(stream, m, tPage, tEpoch, head) {
    stream.x.push(m.x);
    stream.y.push(m.y);
    stream.char_index.push(m.index);
    stream.window.push(m.window);
    stream.t_page_ms.push(tPage);
    stream.t_epoch_ms.push(tEpoch);
    if (stream.head_in_box) stream.head_in_box.push(head);
  }

  function headInBox(provider) {
    if (provider && typeof provider.headInBox === "function") {
      var v = provider.headInBox();
      return v === true ? 1 : v === false ? 0 : -1;
    }
    var faceBox = document.getElementById(FACE_BOX_ID);
    if (!faceBox) return -1;
    return getComputedStyle(faceBox).borderTopColor === FACE_BOX_GREEN ? 1 : 0;
  }

  function randomId() {
    var bytes = new Uint8Array(6);
    (global.crypto || global.msCrypto).getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function sleep(ms) {
    return new Promise(function (resolve) { setTimeout(resolve, ms); });
  }

  // --- the recorder -----------------------------------------------------------------------------------------

  /**
   * A recorder for one page. Options:
   *   endpoint   gateway origin ("" = this page's origin)
   *   token      a browser token object ({token, user_id, session_prefix, expires_at}) or
   *   tokenUrl   a URL answering one to POST (the page's backend, or "/demo/token")
   *   consent    {mouse, gaze, camera}; gaze and camera default to false and need the user's opt-in
   *   hz         samples per second (10-15; default 13.5 as in the IFLLM study)
   *   gaze       the gaze provider (default window.webgazer): setGazeListener(cb(data)) or getCurrentPrediction()
   *   selector   answer elements (default "[data-tacit-answer]"; pairwise order: "left" then "right")
   */
  function collector(options) {
    options = options || {};
    var endpoint = (options.endpoint || "").replace(/\/$/, "");
    var consent = {
      mouse: options.consent && options.consent.mouse === false ? false : true,
      gaze: !!(options.consent && options.consent.gaze),
      camera: !!(options.consent && options.consent.camera),
    };
    var hz = Math.min(15, Math.max(10, options.hz || 13.5));
    var selector = options.selector || "[data-tacit-answer]";
    var token = options.token || null;
    var state = null; // the question being recorded
    var timer = null;
    var sentOnHide = false;

    function provider() {
      return options.gaze || global.webgazer || null;
    }

    async function ensureToken() {
      var soon = Date.now() / 1000 + 30;
      if (token && token.expires_at > soon) return token;
      if (!options.tokenUrl) {
        if (token) return token; // the caller's token; the gateway says when it has expired
        throw new Error("Tacit: no browser token (give `token` or `tokenUrl`)");
      }
      var res = await fetch(options.tokenUrl, { method: "POST", credentials: "same-origin" });
      if (!res.ok) throw new Error("Tacit: token request failed (" + res.status + ")");
      token = await res.json();
      return token;
    }

    function answers(spec) {
      var els = spec.answers || Array.prototype.slice.call(document.querySelectorAll(selector));
      var order = { left: 0, right: 1, current: 0 };
      return els.slice().sort(function (a, b) {
        return (order[a.dataset.tacitAnswer] || 0) - (order[b.dataset.tacitAnswer] || 0);
      });
    }

    function tick() {
      if (!state || document.visibilityState === "hidden") return; // page time stands still while hidden
      if (state.ticks >= MAX_SAMPLES) return stop();
      state.ticks += 1;
      var tPage = pageTime();
      if (state.lastT !== null && tPage <= state.lastT) return; // keep time strictly increasing
      state.lastT = tPage;
      var tEpoch = Date.now();
      var head = consent.camera ? headInBox(provider()) : -1;
      var gaze = state.gazeOn ? state.gaze : null;
      var mouse = pointer;
      state.boxes.forEach(function (box) {
        if (box.dirty) {
          box.map = textMap(box.el);
          box.dirty = false;
        }
        if (box.mouse) push(box.mouse, measure(box.el, box.map, mouse), tPage, tEpoch, head);
        if (box.gaze) push(box.gaze, measure(box.el, box.map, gaze), tPage, tEpoch, head);
      });
      if (state.viewportMouse) {
        state.viewportMouse.x.push(mouse ? mouse.x : -1);
        state.viewportMouse.y.push(mouse ? mouse.y : -1);
        state.viewportMouse.t_page_ms.push(tPage);
        state.viewportMouse.t_epoch_ms.push(tEpoch);
      }
      if (state.viewportGaze) {
        state.viewportGaze.x.push(gaze ? gaze.x : -1);
        state.viewportGaze.y.push(gaze ? gaze.y : -1);
        state.viewportGaze.t_page_ms.push(tPage);
        state.viewportGaze.t_epoch_ms.push(tEpoch);
      }
      if (state.gazeOn && state.poll) {
        state.poll();
      }
    }

    /** Start recording one question; spec: {query, taskId, answers?, models?, turn?, previousResponse?, queryId?}. */
    async function start(spec) {
      stop();
      var els = answers(spec || {});
      if (els.length < 1 || els.length > 2) throw new Error("Tacit: found " + els.length + " answer elements");
      await ensureToken();
      var gp = consent.gaze ? provider() : null;
      state = {
        spec: spec,
        localId: randomId(),
        mode: els.length === 2 ? "pairwise" : "pointwise",
        ticks: 0,
        lastT: null,
        gaze: null,
        gazeOn: !!gp,
        poll: null,
        viewportMouse: consent.mouse ? { x: [], y: [], t_page_ms: [], t_epoch_ms: [] } : null,
        viewportGaze: gp ? { x: [], y: [], t_page_ms: [], t_epoch_ms: [] } : null,
        boxes: els.map(function (el) {
          var box = { el: el, map: textMap(el), dirty: false, mouse: null, gaze: null };
          if (consent.mouse) box.mouse = newStream(consent.camera);
          if (gp) box.gaze = newStream(consent.camera);
          box.observer = new MutationObserver(function () { box.dirty = true; });
          box.observer.observe(el, { childList: true, characterData: true, subtree: true });
          return box;
        }),
      };
      var current = state;
      if (gp && typeof gp.setGazeListener === "function") {
        gp.setGazeListener(function (data) {
          current.gaze = data && isFinite(data.x) && isFinite(data.y) ? { x: data.x, y: data.y } : null;
        });
      } else if (gp && typeof gp.getCurrentPrediction === "function") {
        current.poll = function () {
          Promise.resolve(gp.getCurrentPrediction()).then(function (data) {
            current.gaze = data ? { x: data.x, y: data.y } : null;
          });
        };
      }
      sentOnHide = false;
      timer = setInterval(tick, 1000 / hz);
      tick();
    }

    function stop() {
      if (timer !== null) clearInterval(timer);
      timer = null;
      if (state) state.boxes.forEach(function (box) { box.observer.disconnect(); });
    }

    /** The Session recorded so far (what submit sends), with `feedback` when given. */
    function snapshot(feedback) {
      if (!state) return null;
      var spec = state.spec || {};
      var models = spec.models || [];
      var session = {
        session_id: (token ? token.session_prefix : "") + (spec.sessionId || state.localId),
        user_id: token ? token.user_id : "anonymous",
        task_id: spec.taskId || "page-" + state.localId,
        mode: state.mode,
        query: spec.query || "",
        responses: state.boxes.map(function (box, i) {
          var r = { text: box.el.textContent };
          if (models[i]) r.model = models[i];
          if (box.mouse) r.mouse = box.mouse;
          if (box.gaze) r.gaze = box.gaze;
          return r;
        }),
        consent: { mouse: consent.mouse, gaze: state.gazeOn, camera: consent.camera },
      };
      if (spec.queryId) session.query_id = spec.queryId;
      if (spec.turn !== undefined) session.turn = spec.turn;
      if (spec.previousResponse !== undefined) session.previous_response = spec.previousResponse;
      if (spec.calibrationAccuracy !== undefined) session.calibration_accuracy = spec.calibrationAccuracy;
      if (state.viewportMouse) session.viewport_mouse = state.viewportMouse;
      if (state.viewportGaze) session.viewport_gaze = state.viewportGaze;
      if (feedback) session.feedback = feedback;
      return session;
    }

    async function post(session, keepalive) {
      var tok = await ensureToken();
      return fetch(endpoint + "/v1/collector/sessions", {
        method: "POST",
        headers: { "Content-Type": "application/json", Authorization: "Bearer " + tok.token },
        body: JSON.stringify(session),
        keepalive: !!keepalive,
      });
    }

    /**
     * Stop recording and send the Session with the explicit feedback ({preference, likert}); resolves to the
     * gateway's answer (the predicted preference, or `status: pending` when scoring is deferred).
     */
    async function submit(feedback) {
      if (!state) throw new Error("Tacit: nothing recorded (call start first)");
      stop();
      var delay = 500;
      for (var attempt = 0; ; attempt++) {
        var res;
        try {
          await ensureToken(); // first: a renewed token brings a new session-id prefix
          res = await post(snapshot(feedback));
        } catch (err) {
          if (attempt >= 3) throw err; // the network: retried, then given up
          await sleep(delay *= 2);
          continue;
        }
        if (res.status === 401 && options.tokenUrl && attempt < 3) {
          token = null; // expired while the user read: fetch a new one and send again
          continue;
        }
        if (res.ok) {
          state = null;
          return res.json();
        }
        var retryable = res.status === 429 || res.status >= 500;
        if (!retryable || attempt >= 3) {
          var problem = await res.json().catch(function () { return {}; });
          var err = new Error("Tacit: the gateway refused the session: " + (problem.detail || res.status));
          err.problem = problem;
          err.status = res.status;
          throw err;
        }
        await sleep(Number(res.headers.get("Retry-After")) * 1000 || (delay *= 2));
      }
    }

    // Leaving the page sends what was read (without feedback) rather than losing it.
    global.addEventListener("pagehide", function () {
      if (!state || sentOnHide || options.sendOnLeave === false || !token) return;
      sentOnHide = true;
      stop();
      post(snapshot(null), true).catch(function () {});
    });

    return {
      start: start,
      stop: stop,
      submit: submit,
      snapshot: snapshot,
      get consent() { return consent; },
      get token() { return token; },
      get recording() { return timer !== null; },
    };
  }

  global.Tacit = {
    collector: collector,
    pageTime: pageTime,
    // Exposed for pages that want the same geometry (the demo's heatmap) and for tests.
    measure: function (el, point) { return measure(el, textMap(el), point); },
    version: "1",
  };
})(window);
