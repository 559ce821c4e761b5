// tlgan studio page. The server is stateless: this page holds the face (seed or latent),
// the amounts and the locks, sends them whole with every render, and keeps the undo history.
"use strict";

(function () {
  const MINUS = "\u2212";
  const HISTORY_LIMIT = 200;

  const $ = (id) => document.getElementById(id);
  const els = {
    edited: $("edited"), original: $("original"), originalCaption: $("original-caption"),
    models: $("models"), rows: $("rows"), template: $("row-template"), seed: $("seed"),
    newFace: $("new-face"), reset: $("reset"), undo: $("undo"), download: $("download"),
    photo: $("photo"), tune: $("tune"), dropZone: $("drop-zone"), status: $("status"), error: $("error"),
  };

  let info = null;                 // /api/attributes
  let state = null;                // {seed, latent, label, upload, tuned, amounts: {attr: x}, locks: [attr]}
                                   // (tuned: the id of the generator tuned to an uploaded photo, or null)
  const history = [];              // earlier states, newest last
  const rows = new Map();          // attr -> {row, slider, value, minus, plus, bar, fill, tick, percent, lock}
  let originalProbs = {};
  let shownBase = null;            // key of the face whose original is on screen
  let pending = 0;                 // requests in flight
  let queued = null;               // a render waiting for the one in flight (slider drags)
  let inFlight = false;

  // ------------------------------------------------------------------ state helpers

  const copy = (s) => ({seed: s.seed, latent: s.latent, label: s.label, upload: s.upload, tuned: s.tuned,
                        amounts: Object.assign({}, s.amounts), locks: s.locks.slice(),
                        view: s.view ? {rotate: s.view.rotate, translate: s.view.translate.slice()} : null,
                        translations: Object.assign({}, s.translations || {})});
  const baseKey = (s) => (s.seed !== null ? "seed:" + s.seed : "upload:" + s.upload);
  const fmt = (x) => (x > 0 ? "+" : x < 0 ? MINUS : "") + Math.abs(x).toFixed(1);
  const roundStep = (x) => Math.round(x * 1000) / 1000;

  // The uploads, view sliders and translation rows (photos.js), sharing this page's helpers and state.
  const photos = window.tlganStudioPhotos({
    $, els, api, showImage, showError, saveBlob, renderBody, copy, commit, requestRender, fmt, roundStep, pretty,
    MINUS, history, info: () => info, state: () => state, sync: syncControls,
    busy: (delta) => { pending += delta; setBusy(); },
  });

  function commit(next) {
    history.push(copy(state));
    if (history.length > HISTORY_LIMIT) history.shift();
    state = next;
    els.undo.disabled = false;
    syncControls();
    requestRender();
  }

  function setBusy() {
    document.body.dataset.state = pending > 0 || queued ? "busy" : "idle";
  }

  function showError(message) {
    els.error.textContent = message;
    els.error.hidden = !message;
  }

  // ------------------------------------------------------------------ server calls

  async function api(path, options) {
    const response = await fetch(path, options);
    const isJson = (response.headers.get("content-type") || "").includes("application/json");
    if (!response.ok) {
      let detail = response.status + " " + response.statusText;
      if (isJson) {
        const body = await response.json();
        if (body && body.detail) detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
      }
      throw new Error(detail);
    }
    return isJson ? response.json() : response.blob();
  }

  function renderBody(s, extra) {
    const body = {amounts: s.amounts, locks: s.locks};
    if (s.seed !== null) body.seed = s.seed; else body.latent = s.latent;
    if (s.tuned) body.tuned_id = s.tuned;
    if (s.view) { body.rotate = s.view.rotate; body.translate = s.view.translate; }
    return JSON.stringify(Object.assign(body, extra || {}));
  }

  // Renders are serialised: while one is in flight, only the newest wish waits behind it,
  // so dragging a slider never queues up stale frames.
  function requestRender() {
    photos.requestTranslation();
    queued = {state: copy(state)};
    setBusy();
    if (!inFlight) pump();
  }

  // The image and the scores are asked for at once: the image (PNG bytes) arrives without
  // waiting for the classifier, and the server runs the generator once for both. When the
  // face itself changed, its unedited image comes too.
  async function pump() {
    if (!queued) { setBusy(); return; }
    const job = queued;
    queued = null;
    if (job.state.seed === null && job.state.latent === null) {
      photos.showUninverted(job.state);   // an uploaded photo whose latent is still being found
      shownBase = null;                   // its reconstruction is drawn when the latent comes
      setBusy();
      return;
    }
    inFlight = true;
    pending += 1;
    setBusy();
    const needOriginal = baseKey(job.state) !== shownBase;
    const ask = (path, s, extra) => api(path, {
      method: "POST", headers: {"Content-Type": "application/json"}, body: renderBody(s, extra),
    });
    const image = ask("api/render", job.state, {format: "png"});
    const scores = ask("api/probabilities", job.state, {include_original: needOriginal}).catch((err) => err);
    const unedited = Object.assign(copy(job.state), {amounts: {}, locks: []});
    const original = needOriginal ? ask("api/render", unedited, {format: "png"}).catch((err) => err) : null;
    try {
      showImage(els.edited, await image);
      if (original) {
        const blob = await original;
        if (blob instanceof Error) throw blob;
        showImage(els.original, blob);
        shownBase = baseKey(job.state);
        els.originalCaption.textContent = job.state.seed !== null ? "Original \u00b7 seed " + job.state.seed
                                                                   : "Original \u00b7 " + job.state.label;
      }
      const scored = await scores;
      if (scored instanceof Error) throw scored;
      if (scored.original_probabilities) originalProbs = scored.original_probabilities;
      showScores(scored.probabilities);
      showError("");
    } catch (err) {
      showError(err.message);
    } finally {
      pending -= 1;
      inFlight = false;
      if (queued) pump(); else setBusy();
    }
  }

  // Shows PNG bytes in an <img> through an object URL, and frees the one it showed before.
  function showImage(img, blob) {
    const before = img.dataset.objectUrl;
    img.dataset.objectUrl = URL.createObjectURL(blob);
    img.src = img.dataset.objectUrl;
    if (before) URL.revokeObjectURL(before);
  }

  // ------------------------------------------------------------------ building the rows

  function pretty(name) { return name.replace(/_/g, " "); }

  function buildRows() {
    els.rows.textContent = "";
    const step = info.step;
    for (const attr of info.attributes) {
      const name = attr.name;
      const node = els.template.content.firstElementChild.cloneNode(true);
      const r = {
        row: node, name: node.querySelector(".name"), slider: node.querySelector(".slider"),
        value: node.querySelector(".value"), minus: node.querySelector(".minus"),
        plus: node.querySelector(".plus"), bar: node.querySelector(".bar"), fill: node.querySelector(".fill"),
        tick: node.querySelector(".tick"), percent: node.querySelector(".percent"),
        lock: node.querySelector(".lock input"), scored: attr.scored,
      };
      r.name.textContent = pretty(name);
      r.name.title = name;
      r.minus.setAttribute("aria-label", name + " " + MINUS);
      r.plus.setAttribute("aria-label", name + " +");
      r.minus.title = "Less " + pretty(name).toLowerCase();
      r.plus.title = "More " + pretty(name).toLowerCase();
      r.slider.min = String(-info.slider_max);
      r.slider.max = String(info.slider_max);
      r.slider.step = "0.1";
      r.slider.value = "0";
      r.slider.setAttribute("aria-label", name + " amount");
      r.value.setAttribute("aria-label", name + " amount value");
      r.bar.setAttribute("aria-label", name + " score");
      r.lock.setAttribute("aria-label", "lock " + name);
      r.lock.parentElement.title = "Keep " + pretty(name).toLowerCase() + " fixed while other attributes move";
      if (!attr.scored) { r.row.classList.add("unscored"); r.percent.textContent = "n/a"; }
      if (attr.kind === "learned") {
        // A learned edit: its amount is the model's alpha, and there is no fixed direction to lock.
        r.row.classList.add("learned");
        r.name.title = name + " (learned edit" + (attr.metrics && attr.metrics.unit ? ", one step = " +
                       attr.metrics.unit + " " + name : "") + "; applied after the attribute moves)";
        r.lock.disabled = true;      // and hidden by the stylesheet
      }

      r.minus.addEventListener("click", () => nudge(name, -step));
      r.plus.addEventListener("click", () => nudge(name, +step));
      r.slider.addEventListener("input", () => {    // live preview while dragging
        state.amounts[name] = Number(r.slider.value);
        r.value.textContent = fmt(state.amounts[name]);
        requestRender();
      });
      r.slider.addEventListener("change", () => {   // one undo step per drag, back to where it began
        const start = dragStart.has(name) ? dragStart.get(name) : 0;
        dragStart.delete(name);
        const before = copy(state);
        if (start === 0) delete before.amounts[name]; else before.amounts[name] = start;
        const next = copy(state);
        const value = Number(r.slider.value);
        if (value === 0) delete next.amounts[name]; else next.amounts[name] = value;
        state = before;
        commit(next);
      });
      r.slider.addEventListener("pointerdown", () => rememberDrag(name));
      r.slider.addEventListener("keydown", () => rememberDrag(name));
      r.lock.addEventListener("change", () => {
        const next = copy(state);
        next.locks = next.locks.filter((a) => a !== name);
        if (r.lock.checked) next.locks.push(name);
        commit(next);
      });
      rows.set(name, r);
      els.rows.appendChild(node);
    }
  }

  const dragStart = new Map();
  function rememberDrag(name) {
    if (!dragStart.has(name)) dragStart.set(name, state.amounts[name] || 0);
  }

  function nudge(name, delta) {
    const next = copy(state);
    const limit = info.amount_max;
    const value = roundStep(Math.max(-limit, Math.min(limit, (next.amounts[name] || 0) + delta)));
    if (value === 0) delete next.amounts[name]; else next.amounts[name] = value;
    commit(next);
  }

  function syncControls() {
    const uninverted = state.seed === null && state.latent === null;   // a photo still being inverted
    for (const [name, r] of rows) {
      const amount = state.amounts[name] || 0;
      r.slider.value = String(amount);
      r.value.textContent = fmt(amount);
      r.row.classList.toggle("moved", amount !== 0);
      const locked = state.locks.includes(name);
      r.lock.checked = locked;
      r.row.classList.toggle("locked", locked);
      r.minus.disabled = locked || uninverted;
      r.plus.disabled = locked || uninverted;
      r.slider.disabled = locked || uninverted;
    }
    if (state.seed !== null) els.seed.value = String(state.seed);
    els.undo.disabled = history.length === 0;
    els.download.disabled = uninverted;
    photos.sync();
  }

  function showScores(probs) {
    for (const [name, r] of rows) {
      if (!r.scored) continue;
      const p = probs[name];
      if (p === undefined) continue;
      r.fill.style.width = (p * 100).toFixed(1) + "%";
      r.bar.setAttribute("aria-valuenow", p.toFixed(4));
      r.bar.setAttribute("aria-valuetext", Math.round(p * 100) + "%");
      r.percent.textContent = Math.round(p * 100) + "%";
      const p0 = originalProbs[name];
      if (p0 !== undefined) {
        r.tick.style.left = (p0 * 100).toFixed(1) + "%";
        r.tick.hidden = false;
        r.row.classList.toggle("up", p - p0 > 0.05);
        r.row.classList.toggle("down", p0 - p > 0.05);
      }
    }
  }

  // ------------------------------------------------------------------ toolbar actions

  function newFace(seed) {
    commit({seed: seed, latent: null, label: null, upload: null, tuned: null, amounts: {},
            locks: state.locks.slice(), view: state.view});
  }

  function undo() {
    if (!history.length) return;
    state = history.pop();
    syncControls();
    requestRender();
  }

  // The browser's "save as" for a blob answer: a temporary link, clicked once.
  function saveBlob(blob, filename) {
    const link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  }

  async function download() {
    try {
      const blob = await api("api/render", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: renderBody(state, {format: "png", upscale: 4}),
      });
      const moves = Object.entries(state.amounts).map(([a, x]) => a + (x > 0 ? "+" : "") + x).join("_");
      const face = state.seed !== null ? "seed" + state.seed : "photo";
      saveBlob(blob, "tlgan-" + face + (moves ? "-" + moves : "") + ".png");
    } catch (err) {
      showError(err.message);
    }
  }

  function wireToolbar() {
    els.newFace.addEventListener("click", () => {
      let seed;
      do { seed = Math.floor(Math.random() * 100000); } while (seed === state.seed);
      newFace(seed);
    });
    els.seed.addEventListener("change", () => {
      const seed = Number(els.seed.value);
      if (!Number.isInteger(seed) || seed < 0 || seed > 2147483647) {
        showError("The seed must be a whole number from 0 to 2147483647.");
        return;
      }
      if (seed !== state.seed) newFace(seed);
    });
    els.seed.addEventListener("keydown", (e) => { if (e.key === "Enter") els.seed.dispatchEvent(new Event("change")); });
    els.reset.addEventListener("click", () => {
      if (Object.keys(state.amounts).length) commit(Object.assign(copy(state), {amounts: {}}));
    });
    els.undo.addEventListener("click", undo);
    els.download.addEventListener("click", download);
    els.photo.addEventListener("change", () => photos.uploadPhoto(els.photo.files[0]));

    const zone = els.dropZone;
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (e) => { e.preventDefault(); zone.classList.add("dragging"); });
    }
    for (const type of ["dragleave", "drop"]) {
      zone.addEventListener(type, () => zone.classList.remove("dragging"));
    }
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      const file = e.dataTransfer && e.dataTransfer.files[0];
      if (file) photos.uploadPhoto(file);
    });
    // A photo dropped anywhere else must not make the browser navigate away from the studio.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());

    document.addEventListener("keydown", (e) => {
      const typing = e.target instanceof HTMLInputElement && e.target.type !== "checkbox" && e.target.type !== "range";
      if ((e.ctrlKey || e.metaKey) && !e.shiftKey && e.key.toLowerCase() === "z" && !typing) {
        e.preventDefault();
        undo();
      }
    });
  }

  // ------------------------------------------------------------------ rows from words

  // Shown only when the server has stored CLIP embeddings (tlgan serve --run RUN on a CLIP run):
  // the phrase becomes an axis on the server, then the rows are rebuilt with the new one.
  async function wireWords() {
    const form = $("words");
    const status = await api("api/words").catch(() => ({enabled: false}));
    if (!status.enabled) return;
    form.hidden = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = $("words-add");
      const said = $("words-status");
      button.disabled = true;
      said.textContent = "Fitting\u2026";
      try {
        const added = await api("api/words", {
          method: "POST", headers: {"Content-Type": "application/json"},
          body: JSON.stringify({positive: $("words-positive").value, negative: $("words-negative").value}),
        });
        info = await api("api/attributes");
        buildRows();
        syncControls();
        shownBase = null;              // fetch the original's probabilities again, the new one among them
        requestRender();
        said.textContent = "Added " + pretty(added.name) + " in " + added.seconds.toFixed(2) + " s";
        $("words-positive").value = "";
        $("words-negative").value = "";
        showError("");
      } catch (err) {
        said.textContent = "";
        showError(err.message);
      } finally {
        button.disabled = false;
      }
    });
  }

  // ------------------------------------------------------------------ start

  async function start() {
    wireToolbar();
    try {
      info = await api("api/attributes");
    } catch (err) {
      showError("Cannot reach the studio server: " + err.message);
      document.body.dataset.state = "idle";
      return;
    }
    els.models.textContent = info.generator + " \u00b7 " + info.classifier + " \u00b7 " + info.axes_method +
                             " axes in " + info.axes_space +
                             (info.space !== info.axes_space ? ", faces in " + info.space : "") + " (" +
                             (info.latent_shape.length > 1 ? info.latent_shape.join(" \u00d7 ") : info.latent_dim + "-d") + ")";
    buildRows();
    photos.build();
    wireWords();
    // No tuning on this server (turned off, or a generator without weights): no checkbox.
    if (!info.max_tuned) { els.tune.checked = false; els.tune.parentElement.hidden = true; }
    // ?seed=N opens that face (a shareable link); otherwise a random one.
    const params = new URLSearchParams(location.search);
    const fromUrl = Number(params.get("seed"));
    const seed = params.has("seed") && Number.isInteger(fromUrl) && fromUrl >= 0 ? fromUrl
                                                                                : Math.floor(Math.random() * 100000);
    state = {seed: seed, latent: null, label: null, upload: null, tuned: null, amounts: {}, locks: []};
    syncControls();
    requestRender();
  }

  window.tlganStudio = {state: () => copy(state), history: () => history.length};
  start();
})();
