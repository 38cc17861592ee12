// Cairn's web UI: the live parts of server-rendered pages. No framework, no build step.
"use strict";

(function () {
  const $ = (sel, root) => (root || document).querySelector(sel);

  // Tables that refresh: an element with data-refresh="MS" is replaced by the same element
  // of the page fetched again, while the page is visible.
  function refresh(el) {
    const every = parseInt(el.dataset.refresh, 10) || 3000;
    const tick = async () => {
      if (document.visibilityState === "visible") {
        try {
          const r = await fetch(location.href, { credentials: "same-origin" });
          if (r.ok) {
            const doc = new DOMParser().parseFromString(await r.text(), "text/html");
            const fresh = doc.getElementById(el.id);
            if (fresh) el.innerHTML = fresh.innerHTML;
          }
        } catch (_) { /* the next tick tries again */ }
      }
      setTimeout(tick, every);
    };
    setTimeout(tick, every);
  }

  function two(n) { return String(n).padStart(2, "0"); }
  function clock(ms) {
    const d = new Date(ms);
    return two(d.getUTCHours()) + ":" + two(d.getUTCMinutes()) + ":" + two(d.getUTCSeconds());
  }

  // Appends a line to a <pre>, keeping at most `keep`, following the end if the reader is there.
  function appender(pre, keep) {
    return function (text, cls) {
      const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      const line = document.createElement("div");
      if (cls) line.className = cls;
      line.textContent = text;
      pre.appendChild(line);
      while (pre.childNodes.length > keep) pre.removeChild(pre.firstChild);
      if (atEnd) pre.scrollTop = pre.scrollHeight;
      return line;
    };
  }

  // Live logs of a deployment: server-sent events from the HTTP API.
  function logs(pre) {
    const add = appender(pre, 2000);
    const src = new EventSource(pre.dataset.src);
    src.addEventListener("lines", (ev) => {
      for (const e of JSON.parse(ev.data)) {
        const stream = String(e.stream).toLowerCase();
        add(clock(e.time_ms) + " " + e.instance.slice(0, 8) + "  " + e.line, stream);
      }
    });
    src.addEventListener("problem", (ev) => { add("cairn: " + ev.data, "notice"); src.close(); });
    src.onerror = () => { if (src.readyState === EventSource.CLOSED) add("cairn: the log stream ended", "notice"); };
  }

  // A job's events: output lines, steps, its state, its end.
  function jobEvents(pre) {
    const add = appender(pre, 5000);
    const state = $("#job-state");
    const setState = (word) => {
      if (state) state.innerHTML = '<span class="badge ' + word + '"></span>';
      if (state) state.firstChild.textContent = word;
    };
    const src = new EventSource(pre.dataset.src);
    src.addEventListener("job", (ev) => {
      const msg = JSON.parse(ev.data);
      const kind = Object.keys(msg)[0];
      const v = msg[kind];
      switch (kind) {
        case "Output": add(v.line, String(v.stream).toLowerCase()); break;
        case "Step": add("==> " + v.name + ": " + String(v.status).toLowerCase() + (v.detail ? " (" + v.detail + ")" : ""), "notice"); break;
        case "Result": add(v.key + ": " + v.value, "notice"); break;
        case "State": {
          setState(String(v.state).toLowerCase());
          const r = $("#job-runner");
          if (r && v.runner) { r.textContent = ""; const c = document.createElement("code"); c.textContent = v.runner; r.appendChild(c); }
          if (v.state !== "Queued") { const w = $("#waiting"); if (w) w.remove(); }
          break;
        }
        case "Finished": {
          const word = String(v.state).toLowerCase();
          setState(word);
          add("job " + word + (v.error ? ": " + v.error : ""), v.error ? "stderr" : "notice");
          const c = $("#cancel"); if (c) c.remove();
          src.close();
          break;
        }
        default: break;
      }
    });
  }

  // Requests per second per deployment, from the ingress's counters, as lines over time.
  function chart(box) {
    const svg = $("svg", box), legend = $(".legend", box), scale = $(".scale", box);
    const W = 600, H = 160, KEEP = 90, colors = ["#2f5fd0", "#b7491f", "#1f8a4c", "#7b3fb5", "#b7791f", "#0f7f8a"];
    const NS = "http://www.w3.org/2000/svg";
    let prev = null, prevAt = 0;
    const series = new Map(); // deployment -> [rate…]
    const draw = () => {
      while (svg.firstChild) svg.removeChild(svg.firstChild);
      let max = 1;
      for (const s of series.values()) for (const r of s) max = Math.max(max, r);
      for (let i = 1; i < 4; i++) {
        const g = document.createElementNS(NS, "line");
        const y = H - (H - 10) * i / 4;
        g.setAttribute("x1", 0); g.setAttribute("x2", W); g.setAttribute("y1", y); g.setAttribute("y2", y);
        g.setAttribute("stroke", "#e6e9ef"); svg.appendChild(g);
      }
      legend.textContent = "";
      let i = 0;
      for (const [dep, s] of [...series.entries()].sort((a, b) => a[0] - b[0])) {
        const color = colors[i++ % colors.length];
        const pts = (s.length === 1 ? [0, s[0]] : s).map((r, k) => (W * (k + KEEP - Math.max(s.length, 2)) / (KEEP - 1)).toFixed(1) + "," + (H - 4 - (H - 14) * r / max).toFixed(1));
        const line = document.createElementNS(NS, "polyline");
        line.setAttribute("points", pts.join(" "));
        line.setAttribute("fill", "none"); line.setAttribute("stroke", color); line.setAttribute("stroke-width", "2");
        line.setAttribute("vector-effect", "non-scaling-stroke");
        line.dataset.deployment = dep;
        svg.appendChild(line);
        const item = document.createElement("span");
        const sw = document.createElement("i"); sw.style.background = color;
        item.appendChild(sw);
        item.appendChild(document.createTextNode("v" + dep + ": " + s[s.length - 1].toFixed(1) + " req/s"));
        legend.appendChild(item);
      }
      if (series.size === 0) legend.textContent = "No requests through this node's ingress yet.";
      if (scale) scale.textContent = "top line: " + max.toFixed(1) + " req/s";
    };
    const tick = async () => {
      try {
        const r = await fetch(box.dataset.src, { credentials: "same-origin" });
        if (r.ok) {
          const now = performance.now();
          const counts = new Map((await r.json()).map((d) => [d.deployment, d.requests]));
          if (prev) {
            const dt = (now - prevAt) / 1000;
            for (const [dep, n] of counts) {
              const s = series.get(dep) || [];
              s.push(Math.max(0, (n - (prev.get(dep) || 0)) / dt));
              while (s.length > KEEP) s.shift();
              series.set(dep, s);
            }
            for (const [dep, s] of series) if (!counts.has(dep)) { s.push(0); while (s.length > KEEP) s.shift(); }
            draw();
          }
          prev = counts; prevAt = now;
        }
      } catch (_) { /* next tick */ }
      setTimeout(tick, 1000);
    };
    draw();
    tick();
  }

  document.addEventListener("DOMContentLoaded", () => {
    document.querySelectorAll("[data-refresh][id]").forEach(refresh);
    const l = $("#logs[data-src]"); if (l) logs(l);
    const e = $("#events[data-src]"); if (e) jobEvents(e);
    const c = $("#traffic[data-src]"); if (c) chart(c);
  });
})();
