// tlgan studio page, part two: uploaded photos, StyleGAN3's view sliders and the translation rows.
// studio.js calls window.tlganStudioPhotos(core) once with the page's shared helpers and state
// getters; this file keeps the uploads (photo, alignment, face) and the translated photo.
"use strict";

window.tlganStudioPhotos = function (core) {
  const {$, els, api, showImage, showError, saveBlob, renderBody, copy, commit, requestRender,
         fmt, roundStep, pretty, MINUS} = core;
  const info = () => core.info();
  const state = () => core.state();

  const photoEls = {
    view: $("view-controls"), rotate: $("view-rotate"), x: $("view-x"), y: $("view-y"),
    rotateValue: $("view-rotate-value"), xValue: $("view-x-value"), yValue: $("view-y-value"),
    alignedFigure: $("aligned-figure"), aligned: $("aligned"),
    translatedFigure: $("translated-figure"), translated: $("translated"),
    download: $("photo-download"), downloadButton: $("download-photo"),
  };
  const uploadData = new Map();    // upload number -> {file, alignment, input}
  const translationRows = new Map();
  let uploads = 0;                 // numbers uploaded photos, so two files of one name stay apart
  let translating = 0;             // numbers translation requests; only the newest is shown
  let viewDragStart;               // state.view when the current drag of a view slider began
  let shownTranslation = null;     // upload and amounts of the translated photo on screen

  // ------------------------------------------------------------------ uploads

  // With translation rows, the photo's face comes first (/api/face: no inversion), so those rows
  // work at once; the face has no latent (the latent rows wait) until /api/invert answers.
  async function uploadPhoto(file) {
    if (!file) return;
    const limit = info() && info().max_upload_bytes;
    if (limit && file.size > limit) {
      showError(file.name + " is " + (file.size / 1e6).toFixed(1) + " MB; the limit is " +
                (limit / 1e6).toFixed(1) + " MB. Choose a smaller image.");
      return;
    }
    const tune = els.tune.checked;
    const label = file.name.length > 24 ? file.name.slice(0, 21) + "\u2026" : file.name;
    const finding = "Finding " + file.name + " in the generator\u2019s latent space" +
                    (tune ? " and tuning the generator to it" : "") + "\u2026";
    let number = null;             // this upload's number, once its face is on the page
    core.busy(+1);
    try {
      if (translationRows.size) {
        els.status.textContent = "Preparing " + file.name + "\u2026";
        const faceForm = new FormData();
        faceForm.append("file", file, file.name);
        const face = await api("api/face", {method: "POST", body: faceForm});
        number = ++uploads;
        rememberUpload(number, file, face);
        commit({seed: null, latent: null, label: label, upload: number, tuned: null, amounts: {},
                locks: state().locks.slice()});
        els.status.textContent = file.name + " is ready for the translation rows. " + finding;
        showError("");
      } else {
        els.status.textContent = finding;
      }
      const form = new FormData();
      form.append("file", file, file.name);
      form.append("tune", tune ? "true" : "false");
      const result = await api("api/invert", {method: "POST", body: form});
      if (number === null) {
        number = ++uploads;
        rememberUpload(number, file, result);
        commit({seed: null, latent: result.latent, label: label, upload: number, tuned: result.tuned_id || null,
                amounts: {}, locks: state().locks.slice()});
      } else {
        settle(number, result.latent, result.tuned_id || null);
      }
      const dB = (x) => " (" + x.toFixed(1) + " dB)";
      const tuned = result.info && result.info.tuned;
      const psnr = tuned && typeof tuned.psnr_db === "number" ? dB(tuned.psnr_db)
                 : result.info && typeof result.info.psnr_db === "number" ? dB(result.info.psnr_db) : "";
      els.status.textContent = "Loaded " + file.name + psnr + (result.tuned_id ? ", with a generator tuned to it" : "") +
                               ". The original now shows its reconstruction.";
      showError("");
    } catch (err) {
      els.status.textContent = number === null ? "" : file.name + " works in the translation rows only.";
      showError(err.message);
    } finally {
      core.busy(-1);
      els.photo.value = "";
    }
  }

  // The latent of upload `number` arrived: every state of that photo (now and in the undo history)
  // gets it, and the face on screen is drawn from it if it is that photo.
  function settle(number, latent, tuned) {
    for (const s of [state(), ...core.history]) {
      if (s.seed === null && s.upload === number && s.latent === null) { s.latent = latent; s.tuned = tuned; }
    }
    core.sync();
    if (state().seed === null && state().upload === number) requestRender();
  }

  function rememberUpload(number, file, result) {
    uploadData.set(number, {file: file, alignment: result.alignment || null, input: result.input_image || null});
  }

  // Until its latent comes, an uploaded photo's own face stands in for the edited and original faces.
  function showUninverted(s) {
    const photo = uploadData.get(s.upload);
    if (!photo || !photo.input) return;
    for (const img of [els.edited, els.original]) {
      const before = img.dataset.objectUrl;
      delete img.dataset.objectUrl;
      img.src = photo.input;
      if (before) URL.revokeObjectURL(before);
    }
    els.originalCaption.textContent = "Photo \u00b7 " + s.label + " (finding its latent\u2026)";
  }

  // ------------------------------------------------------------------ view sliders and translation rows

  function serverView() {
    const t = info() && info().input_transform;
    return t && t.rotate !== null ? {rotate: t.rotate, translate: t.translate.slice()} : {rotate: 0, translate: [0, 0]};
  }

  function build() {
    if (info().input_transform) {
      photoEls.view.hidden = false;
      const sliders = [photoEls.rotate, photoEls.x, photoEls.y];
      for (const slider of sliders) {
        slider.addEventListener("input", () => {      // live preview while dragging
          if (viewDragStart === undefined) viewDragStart = state().view || null;
          state().view = {rotate: Number(photoEls.rotate.value),
                          translate: [Number(photoEls.x.value), Number(photoEls.y.value)]};
          showView(state().view);
          requestRender();
        });
        slider.addEventListener("change", () => {     // one undo step per drag, back to where it began
          if (viewDragStart === undefined) return;     // no move since the last change
          const next = copy(state());
          state().view = viewDragStart;
          viewDragStart = undefined;
          commit(next);
        });
      }
    }
    photoEls.downloadButton.addEventListener("click", downloadPhoto);
    for (const model of info().translations || []) buildTranslationRow(model);
  }

  function buildTranslationRow(model) {
    const name = model.name;
    const node = els.template.content.firstElementChild.cloneNode(true);
    const r = {row: node, slider: node.querySelector(".slider"), value: node.querySelector(".value"),
               minus: node.querySelector(".minus"), plus: node.querySelector(".plus")};
    node.classList.add("translation", "unscored");
    node.hidden = true;
    const label = node.querySelector(".name");
    label.textContent = pretty(name);
    label.title = name + ": moves the uploaded photo itself (trained for " + model.amount + " units of " +
                  model.attribute + "), one forward pass, no inversion";
    node.querySelector(".percent").textContent = "n/a";
    node.querySelector(".lock input").disabled = true;
    r.minus.setAttribute("aria-label", name + " " + MINUS);
    r.plus.setAttribute("aria-label", name + " +");
    r.slider.min = String(-info().slider_max);
    r.slider.max = String(info().slider_max);
    r.slider.step = "0.1";
    r.slider.value = "0";
    r.slider.setAttribute("aria-label", name + " amount");
    const move = (value) => {
      const next = copy(state());
      const limit = info().amount_max;
      value = roundStep(Math.max(-limit, Math.min(limit, value)));
      if (value === 0) delete next.translations[name]; else next.translations[name] = value;
      commit(next);
    };
    const now = () => (state().translations || {})[name] || 0;
    r.minus.addEventListener("click", () => move(now() - info().step));
    r.plus.addEventListener("click", () => move(now() + info().step));
    r.slider.addEventListener("change", () => move(Number(r.slider.value)));
    translationRows.set(name, r);
    els.rows.appendChild(node);
  }

  function showView(view) {
    const v = view || serverView();
    photoEls.rotate.value = String(v.rotate);
    photoEls.x.value = String(v.translate[0]);
    photoEls.y.value = String(v.translate[1]);
    photoEls.rotateValue.textContent = String(v.rotate);
    photoEls.xValue.textContent = Number(v.translate[0]).toFixed(2);
    photoEls.yValue.textContent = Number(v.translate[1]).toFixed(2);
  }

  function sync() {
    const s = state();
    if (info() && info().input_transform) showView(s.view);
    const photo = s.seed === null ? uploadData.get(s.upload) : null;
    for (const [name, r] of translationRows) {
      const amount = (s.translations || {})[name] || 0;
      r.row.hidden = !photo;
      r.slider.value = String(amount);
      r.value.textContent = fmt(amount);
      r.row.classList.toggle("moved", amount !== 0);
    }
    photoEls.alignedFigure.hidden = !(photo && photo.alignment);
    if (photo && photo.alignment) photoEls.aligned.src = photo.input;
    photoEls.download.hidden = !(photo && photo.alignment && s.latent);
    photoEls.translatedFigure.hidden = !(photo && translationRows.size);
  }

  // The uploaded face moved by the translation rows: one request per change, the newest shown.
  async function requestTranslation() {
    const s = state();
    const photo = s && s.seed === null ? uploadData.get(s.upload) : null;
    if (!photo || !photo.input || !translationRows.size) return;
    const key = s.upload + ":" + JSON.stringify(s.translations || {});
    if (key === shownTranslation) return;        // an axis move: the translated photo stays as it is
    shownTranslation = key;
    const ticket = ++translating;
    try {
      const blob = await api("api/translate", {
        method: "POST", headers: {"Content-Type": "application/json"},
        body: JSON.stringify({image: photo.input, amounts: s.translations || {}}),
      });
      if (ticket === translating) showImage(photoEls.translated, blob);
    } catch (err) {
      if (ticket === translating) shownTranslation = null;
      showError(err.message);
    }
  }

  async function downloadPhoto() {
    const s = state();
    const photo = s.seed === null ? uploadData.get(s.upload) : null;
    if (!photo || !photo.alignment || !s.latent) return;
    const form = new FormData();
    form.append("file", photo.file, photo.file.name);
    const request = JSON.parse(renderBody(s));
    request.alignment = photo.alignment;
    form.append("request", JSON.stringify(request));
    try {
      const blob = await api("api/paste-back", {method: "POST", body: form});
      saveBlob(blob, "tlgan-" + photo.file.name.replace(/\.[^.]*$/, "") + "-edited.png");
    } catch (err) {
      showError(err.message);
    }
  }

  return {build, sync, requestTranslation, uploadPhoto, showUninverted};
};
