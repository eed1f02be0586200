// histoflow slide lab: slides through OpenSeadragon, histoflow's outputs on top.
// Plain script, no build step. Rasters (heatmaps, masks) are images the server colours and
// OpenSeadragon places; vectors (GeoJSON, detections, tile grids) are drawn on a canvas above it.
"use strict";
(function () {
  const OSD = window.OpenSeadragon;
  const enc = encodeURIComponent;
  const $ = (sel, root) => (root || document).querySelector(sel);
  const el = (tag, attrs, ...kids) => {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") e.className = v;
      else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
      else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v === true ? "" : v);
    }
    for (const k of kids) if (k !== null && k !== undefined) e.append(k);
    return e;
  };
  const fmt = (v, d) => (v === null || v === undefined ? "–" : typeof v === "number" ? +v.toPrecision(d || 3) + "" : v);

  const lab = { slides: [], byId: {}, panes: [], compare: false, leader: 0, colourMaps: {}, luts: {} };
  window.slideLab = lab; // the browser tests and the console look in here

  function lut(name) { // 256 colours interpolated from the server's 11 stops
    if (lab.luts[name]) return lab.luts[name];
    const stops = (lab.colourMaps[name] || ["#ff0000", "#ff0000"]).map((h) => [1, 3, 5].map((i) => parseInt(h.slice(i, i + 2), 16)));
    const out = [];
    for (let i = 0; i < 256; i++) {
      const t = (i / 255) * (stops.length - 1), k = Math.min(Math.floor(t), stops.length - 2), f = t - k;
      const c = stops[k].map((a, j) => Math.round(a + (stops[k + 1][j] - a) * f));
      out.push(`rgb(${c[0]},${c[1]},${c[2]})`);
    }
    return (lab.luts[name] = out);
  }

  class Pane {
    constructor(index) {
      this.index = index;
      this.root = document.getElementById("pane-" + index);
      this.root.append(
        el("div", { class: "viewer" }), el("canvas", { class: "vectors" }), el("div", { class: "title" }),
        el("div", { class: "scalebar", hidden: true }, el("div", { class: "bar" }), el("span")), el("div", { class: "message", hidden: true }));
      this.canvas = $("canvas.vectors", this.root);
      this.viewer = OSD({
        element: $(".viewer", this.root), prefixUrl: "static/openseadragon/images/", drawer: "canvas",
        showNavigator: true, navigatorPosition: "BOTTOM_RIGHT", showRotationControl: false, animationTime: 0.4,
        maxZoomPixelRatio: 4, visibilityRatio: 0.5, gestureSettingsMouse: { clickToZoom: false }, timeout: 60000,
      });
      this.slide = null; this.info = null; this.base = null; this.overlays = {};
      this.stats = { failed: 0, loaded: 0 };
      const v = this.viewer;
      v.addHandler("tile-load-failed", () => this.stats.failed++);
      v.addHandler("tile-loaded", () => this.stats.loaded++);
      v.addHandler("update-viewport", () => this.draw());
      v.addHandler("animation", () => { this.updateScale(); lab.follow(this); });
      v.addHandler("animation-finish", () => { this.updateScale(); lab.follow(this); lab.updateHash(); });
      for (const ev of ["canvas-press", "canvas-scroll", "canvas-drag"]) v.addHandler(ev, () => (lab.leader = this.index));
      this.root.addEventListener("mousemove", (e) => this.hover(e));
      this.root.addEventListener("mouseleave", () => ($("#tooltip").hidden = true));
    }

    message(text) { const m = $(".message", this.root); m.textContent = text || ""; m.hidden = !text; }

    async open(id, view) {
      this.slide = id; this.info = null; this.base = null; this.overlays = {};
      this.message(""); this.viewer.close(); this.draw(); lab.renderControls();
      const r = await fetch(`api/slides/${enc(id)}`);
      if (!r.ok) { this.message(await r.text()); lab.renderControls(); return; }
      const info = (this.info = await r.json());
      Object.assign(lab.colourMaps, info.colour_maps);
      for (const d of info.overlays) {
        const vector = d.type === "vector";
        this.overlays[d.id] = {
          desc: d, on: false, item: null, features: null, opacity: vector ? 0.9 : 0.5,
          cmap: vector ? (d.value_range && d.kind !== "tile_grid" && d.kind !== "geojson" ? "turbo" : "none") : d.colour_map,
          threshold: d.value_range ? d.value_range[0] : null,
        };
      }
      await new Promise((resolve) => {
        this.viewer.addOnceHandler("open", resolve);
        this.viewer.addOnceHandler("open-failed", (e) => { this.message(`cannot open: ${e.message}`); resolve(); });
        this.viewer.open({ tileSource: info.dzi });
      });
      this.base = this.viewer.world.getItemAt(0);
      if (view && view.ds) this.setView(view);
      for (const oid of (view && view.on) || []) if (this.overlays[oid] && !this.overlays[oid].desc.error) await this.toggle(oid, true);
      this.updateScale(); lab.renderControls(); lab.updateHash();
    }

    // level-0 centre and level-0 px per screen px: a view that means the same on any screen
    getView() {
      const vp = this.viewer.viewport, c = this.base.viewportToImageCoordinates(vp.getCenter(true));
      return { x: Math.round(c.x), y: Math.round(c.y), ds: +(1 / this.base.viewportToImageZoom(vp.getZoom(true))).toPrecision(4) };
    }
    setView(v) {
      if (!this.base) return;
      const vp = this.viewer.viewport;
      vp.zoomTo(this.base.imageToViewportZoom(1 / v.ds), null, true);
      vp.panTo(this.base.imageToViewportCoordinates(v.x, v.y), true);
    }

    async toggle(oid, on) {
      const ov = this.overlays[oid];
      ov.on = on;
      if (ov.desc.type === "raster") {
        if (on) await this.addRaster(ov);
        else if (ov.item) { this.viewer.world.removeItem(ov.item); ov.item = null; }
      } else if (on && !ov.features) {
        const r = await fetch(`api/slides/${enc(this.slide)}/overlays/${enc(oid)}.json`);
        if (r.ok) ov.features = await r.json(); else { ov.desc.error = await r.text(); ov.on = false; lab.renderControls(); }
      }
      this.viewer.forceRedraw(); this.draw(); lab.updateHash();
    }

    addRaster(ov) {
      const d = ov.desc, W = this.info.levels[0].width, [bx, by, bw] = d.bounds, old = ov.item;
      const t = ov.threshold === null || d.value_range === null || ov.threshold <= d.value_range[0] ? "" : ov.threshold;
      const url = `api/slides/${enc(this.slide)}/overlays/${enc(d.id)}.png?cmap=${enc(ov.cmap || "jet")}&threshold=${t}`;
      return new Promise((resolve) => {
        this.viewer.addTiledImage({
          tileSource: { type: "image", url }, x: bx / W, y: by / W, width: bw / W, opacity: ov.opacity,
          success: (e) => { if (old) this.viewer.world.removeItem(old); ov.item = e.item; if (!ov.on) this.viewer.world.removeItem(e.item); resolve(); },
          error: (e) => { d.error = `cannot load ${d.name}: ${e.message || "error"}`; ov.on = false; lab.renderControls(); resolve(); },
        });
      });
    }

    draw() {
      const c = this.canvas, dpr = window.devicePixelRatio || 1, w = c.clientWidth, h = c.clientHeight;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
      const ctx = c.getContext("2d");
      ctx.setTransform(1, 0, 0, 1, 0, 0); ctx.clearRect(0, 0, c.width, c.height);
      if (!this.base) return;
      const vp = this.viewer.viewport;
      const p0 = vp.pixelFromPoint(this.base.imageToViewportCoordinates(0, 0, true), true);
      const p1 = vp.pixelFromPoint(this.base.imageToViewportCoordinates(10000, 10000, true), true);
      const s = (p1.x - p0.x) / 10000;
      this.transform = { x: p0.x, y: p0.y, s };
      for (const ov of Object.values(this.overlays)) {
        if (!ov.on || !ov.features) continue;
        ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
        ctx.globalAlpha = ov.opacity;
        drawFeatures(ctx, ov, this.transform, w, h);
      }
    }

    updateScale() {
      const bar = $(".scalebar", this.root);
      if (!this.base || !this.info) { bar.hidden = true; return; }
      bar.hidden = false;
      if (!this.info.mpp) { $(".bar", bar).style.width = "0"; $("span", bar).textContent = "scale unknown (no mpp)"; return; }
      const umPerPx = this.info.mpp / this.base.viewportToImageZoom(this.viewer.viewport.getZoom(true));
      const target = 120 * umPerPx, p = Math.pow(10, Math.floor(Math.log10(target)));
      const len = [5, 2, 1].map((m) => m * p).find((l) => l <= target) || p;
      $(".bar", bar).style.width = `${len / umPerPx}px`;
      $("span", bar).textContent = len >= 1000 ? `${len / 1000} mm` : `${+len.toPrecision(3)} µm`;
    }

    hover(e) {
      const tip = $("#tooltip"), t = this.transform;
      if (!t) return;
      const r = this.root.getBoundingClientRect(), mx = e.clientX - r.left, my = e.clientY - r.top;
      let best = null, bestD = 64;
      for (const ov of Object.values(this.overlays)) {
        if (!ov.on || !ov.features) continue;
        const P = ov.features.points;
        for (let i = 0; i < P.x.length; i++) {
          if (!shown(ov, P.value[i])) continue;
          const dx = t.x + P.x[i] * t.s - mx, dy = t.y + P.y[i] * t.s - my, d = dx * dx + dy * dy;
          if (d < bestD) { bestD = d; best = { ov, i }; }
        }
      }
      if (!best) { tip.hidden = true; return; }
      const P = best.ov.features.points, info = P.info[best.i] || {};
      tip.textContent = [`${P.label[best.i] || best.ov.desc.name}  (${Math.round(P.x[best.i])}, ${Math.round(P.y[best.i])})`,
        ...Object.entries(info).map(([k, v]) => `${k}: ${fmt(v)}`)].join("\n");
      tip.style.left = `${e.clientX + 14}px`; tip.style.top = `${e.clientY + 10}px`; tip.hidden = false;
    }
  }

  const shown = (ov, v) => ov.threshold === null || v === null || v === undefined || v >= ov.threshold;
  const colourOf = (ov, v, fallback) => {
    if (ov.cmap === "none" || v === null || v === undefined || !ov.desc.value_range) return fallback;
    const [lo, hi] = ov.desc.value_range;
    return lut(ov.cmap)[Math.max(0, Math.min(255, Math.round(((v - lo) / (hi - lo || 1)) * 255)))];
  };

  function drawFeatures(ctx, ov, t, w, h) {
    const F = ov.features, X = (x) => t.x + x * t.s, Y = (y) => t.y + y * t.s;
    ctx.lineWidth = 1.5;
    for (const g of F.polygons.concat(F.lines)) {
      if (!shown(ov, g.value)) continue;
      const col = colourOf(ov, g.value, g.color || "#dc1e1e");
      ctx.beginPath();
      for (const ring of g.rings || [g.coords]) {
        ctx.moveTo(X(ring[0]), Y(ring[1]));
        for (let i = 2; i < ring.length; i += 2) ctx.lineTo(X(ring[i]), Y(ring[i + 1]));
        if (g.rings) ctx.closePath();
      }
      ctx.strokeStyle = col; ctx.stroke();
      if (g.rings) { ctx.fillStyle = col; const a = ctx.globalAlpha; ctx.globalAlpha = a * 0.25; ctx.fill("evenodd"); ctx.globalAlpha = a; }
    }
    const B = F.boxes;
    if (B) {
      const size = B.size * t.s;
      for (let i = 0; i < B.x.length; i++) {
        const v = B.value ? B.value[i] : null, x = X(B.x[i]), y = Y(B.y[i]);
        if (!shown(ov, v) || x > w || y > h || x + size < 0 || y + size < 0) continue;
        ctx.strokeStyle = colourOf(ov, v, "#1f5fd6"); ctx.strokeRect(x, y, size, size);
      }
    }
    const P = F.points, r = 5;
    for (let i = 0; i < P.x.length; i++) {
      const x = X(P.x[i]), y = Y(P.y[i]);
      if (!shown(ov, P.value[i]) || x < -r || y < -r || x > w + r || y > h + r) continue;
      ctx.beginPath(); ctx.arc(x, y, r, 0, 2 * Math.PI);
      ctx.fillStyle = colourOf(ov, P.value[i], /atyp/i.test(P.label[i]) ? "#ff8c00" : "#e0182d"); ctx.fill();
      ctx.strokeStyle = "white"; ctx.lineWidth = 1.5; ctx.stroke();
    }
  }

  // -- the side panel ----------------------------------------------------------------------
  function renderSlides() {
    const ul = $("#slides");
    ul.replaceChildren();
    if (!lab.slides.length) ul.append(el("li", { class: "muted" }, "no slides"));
    for (const s of lab.slides) {
      const scores = s.scores.map((sc) => el("div", { class: "score", title: sc.run }, `${sc.label}: `, el("b", {}, fmt(sc.value)), ` · ${sc.run}`));
      const li = el("li", { "data-slide": s.id, class: s.error ? "broken" : "", onclick: () => !s.error && lab.panes[0].open(s.id) },
        s.error ? el("div", { class: "noimg" }) : el("img", { src: `api/slides/${enc(s.id)}/thumbnail.jpeg`, loading: "lazy", alt: "" }),
        el("div", {}, el("div", { class: "slide-name" }, s.name),
          s.error ? el("div", { class: "error" }, s.error) : el("div", { class: "score" }, `${s.width} × ${s.height} px · ${s.mpp ? fmt(s.mpp) + " µm/px" : "mpp unknown"} · ${s.overlays} overlays`),
          ...scores));
      ul.append(li);
    }
    $("#problems").replaceChildren(...lab.problems.map((p) => el("li", {}, p)));
    markActive();
  }

  function markActive() {
    for (const li of document.querySelectorAll("#slides li[data-slide]")) {
      li.classList.toggle("active", li.dataset.slide === lab.panes[0].slide);
      if (li.dataset.slide === lab.panes[0].slide && !li.dataset.shown) li.scrollIntoView({ block: "nearest" });
      li.dataset.shown = li.dataset.slide === lab.panes[0].slide ? "1" : "";
      li.classList.toggle("active-right", lab.compare && li.dataset.slide === lab.panes[1].slide);
    }
  }

  lab.renderControls = function () {
    markActive();
    const box = $("#pane-controls");
    box.replaceChildren();
    for (const pane of lab.panes) {
      if (pane.index === 1 && !lab.compare) continue;
      const side = lab.compare ? (pane.index ? "Right: " : "Left: ") : "";
      box.append(el("h2", {}, side + (pane.info ? pane.info.name : pane.slide || "no slide")));
      renderTitle(pane);
      if (!pane.info) continue;
      const i = pane.info, l0 = i.levels[0];
      const rows = [["size", `${l0.width} × ${l0.height} px`], ["mpp", i.mpp ? `${fmt(i.mpp, 4)} µm/px (${i.mpp_source})` : "unknown"],
        ["objective", i.objective_power ? `${i.objective_power}×` : "–"], ["vendor", `${i.vendor || "–"} (${i.backend})`],
        ["levels", i.levels.map((lv) => `${lv.width}×${lv.height}`).join(", ")]];
      if (i.associated_images.length) rows.push(["associated", i.associated_images.join(", ")]);
      box.append(el("table", { class: "meta" }, ...rows.map(([k, v]) => el("tr", {}, el("td", {}, k), el("td", {}, v)))));
      if (!i.overlays.length) box.append(el("p", { class: "muted", style: "margin:8px 12px" }, "no overlays found for this slide"));
      for (const ov of Object.values(pane.overlays)) box.append(overlayControls(pane, ov));
    }
  };

  function overlayControls(pane, ov) {
    const d = ov.desc, id = `p${pane.index}-${d.id}`;
    const div = el("div", { class: "overlay" + (d.error ? " failed" : ""), "data-overlay": d.id, "data-name": d.name, "data-pane": pane.index },
      el("label", { class: "name", for: id },
        el("input", { type: "checkbox", id, checked: ov.on, disabled: !!d.error, onchange: (e) => pane.toggle(d.id, e.target.checked) }),
        d.name, el("span", { class: "run" }, `${d.run}/${d.file}`)));
    if (d.error) { div.append(el("div", { class: "error" }, d.error)); return div; }
    const controls = el("div", { class: "controls" });
    const opacity = el("input", { type: "range", min: 0, max: 1, step: 0.05, value: ov.opacity, "aria-label": "opacity" });
    const opv = el("span", { class: "v" }, `${Math.round(ov.opacity * 100)}%`);
    opacity.addEventListener("input", () => {
      ov.opacity = +opacity.value; opv.textContent = `${Math.round(ov.opacity * 100)}%`;
      if (ov.item) ov.item.setOpacity(ov.opacity); pane.draw();
    });
    controls.append(el("span", {}, "opacity"), opacity, opv);
    if (d.value_range) {
      const maps = d.type === "vector" ? ["none", ...Object.keys(lab.colourMaps)] : Object.keys(lab.colourMaps);
      const select = el("select", { "aria-label": "colour map" }, ...maps.map((m) => el("option", { value: m, selected: m === ov.cmap }, m === "none" ? "class colour" : m)));
      const legend = el("div", { class: "legend" });
      const paint = () => (legend.style.background = ov.cmap === "none" ? "none" : `linear-gradient(to right, ${lab.colourMaps[ov.cmap].join(",")})`);
      paint();
      select.addEventListener("change", async () => { ov.cmap = select.value; paint(); if (d.type === "raster" && ov.on) await pane.addRaster(ov); pane.draw(); });
      controls.append(el("span", {}, "colours"), select, el("span"), el("span", {}, fmt(d.value_range[0])), legend, el("span", { class: "v" }, fmt(d.value_range[1])));
      const [lo, hi] = d.value_range;
      const thr = el("input", { type: "range", min: lo, max: hi, step: (hi - lo) / 100 || 1, value: ov.threshold, "aria-label": "threshold" });
      const tv = el("span", { class: "v" }, fmt(ov.threshold));
      thr.addEventListener("input", () => { ov.threshold = +thr.value; tv.textContent = fmt(ov.threshold); pane.draw(); });
      thr.addEventListener("change", async () => { if (d.type === "raster" && ov.on) await pane.addRaster(ov); });
      controls.append(el("span", { title: `hide ${d.value_name || "values"} below` }, "threshold"), thr, tv);
    }
    div.append(controls);
    if (d.type === "vector") div.append(el("div", { class: "run" }, `${d.count} features${d.skipped ? `, ${d.skipped} without geometry` : ""}${d.value_name ? ` · value: ${d.value_name}` : ""}`));
    return div;
  }

  function renderTitle(pane) {
    const t = $(".title", pane.root);
    if (!lab.compare) { t.replaceChildren(pane.info ? pane.info.name : ""); return; }
    const sel = el("select", { "aria-label": "slide", onchange: (e) => pane.open(e.target.value, pane.index ? lab.panes[0].base && lab.panes[0].getView() : null) },
      ...lab.slides.filter((s) => !s.error).map((s) => el("option", { value: s.id, selected: s.id === pane.slide }, s.name)));
    t.replaceChildren(pane.index ? "right: " : "left: ", sel);
  }

  // -- side by side, shared links ----------------------------------------------------------
  lab.follow = function (pane) { // the pane the user moves leads; the other takes its view
    if (!lab.compare || pane.index !== lab.leader || !pane.base) return;
    const other = lab.panes[1 - pane.index];
    if (other.base) { other.setView(pane.getView()); other.updateScale(); }
  };

  lab.setCompare = async function (on) {
    lab.compare = on;
    $("#compare").setAttribute("aria-pressed", on);
    const right = lab.panes[1];
    right.root.hidden = !on;
    lab.panes.forEach((p) => p.viewer.forceResize && p.viewer.forceResize());
    if (on && !right.slide && lab.panes[0].slide) {
      const left = lab.panes[0];
      await right.open(left.slide, left.base ? { ...left.getView(), on: [] } : null);
    }
    lab.renderControls(); lab.updateHash();
  };

  let hashTimer = null;
  lab.updateHash = function () {
    clearTimeout(hashTimer);
    hashTimer = setTimeout(() => {
      const a = lab.panes[0];
      if (!a.slide) return;
      const q = new URLSearchParams({ slide: a.slide });
      if (a.base) { const v = a.getView(); q.set("x", v.x); q.set("y", v.y); q.set("ds", v.ds); }
      const on = (p) => Object.values(p.overlays).filter((o) => o.on).map((o) => o.desc.id).join(",");
      if (on(a)) q.set("on", on(a));
      if (lab.compare && lab.panes[1].slide) { q.set("right", lab.panes[1].slide); if (on(lab.panes[1])) q.set("ron", on(lab.panes[1])); }
      history.replaceState(null, "", `${location.pathname}${location.search}#${q}`);
    }, 150);
  };

  function parseHash() {
    const q = new URLSearchParams(location.hash.slice(1)), num = (k) => (q.has(k) ? +q.get(k) : null);
    const list = (k) => (q.get(k) ? q.get(k).split(",") : []);
    return { slide: q.get("slide"), view: { x: num("x"), y: num("y"), ds: num("ds"), on: list("on") }, right: q.get("right"), ron: list("ron") };
  }

  async function main() {
    lab.panes = [new Pane(0), new Pane(1)];
    $("#compare").addEventListener("click", () => lab.setCompare(!lab.compare));
    $("#copy-link").addEventListener("click", () => navigator.clipboard && navigator.clipboard.writeText(location.href.replace(/([?&])token=[^&#]*&?/, "$1")));
    const r = await fetch("api/slides");
    if (!r.ok) { $("#slides").replaceChildren(el("li", { class: "error" }, await r.text())); return; }
    const data = await r.json();
    lab.slides = data.slides; lab.problems = data.problems;
    for (const s of lab.slides) lab.byId[s.id] = s;
    renderSlides();
    const h = parseHash(), first = lab.slides.find((s) => !s.error);
    const start = h.slide && lab.byId[h.slide] ? h.slide : first && first.id;
    if (start) await lab.panes[0].open(start, h.slide === start ? h.view : null);
    if (h.right && lab.byId[h.right]) {
      lab.compare = true; $("#compare").setAttribute("aria-pressed", true); lab.panes[1].root.hidden = false;
      lab.panes[0].viewer.forceResize && lab.panes[0].viewer.forceResize();
      await lab.panes[1].open(h.right, { ...(lab.panes[0].base ? lab.panes[0].getView() : {}), on: h.ron });
    }
    lab.renderControls();
    lab.ready = true;
  }
  lab.started = main().catch((e) => { console.error(e); lab.error = String(e); });
})();
