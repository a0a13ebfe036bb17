// The service's demo page: a plain ES module, no build step, no dependencies, nothing loaded from
// elsewhere (the page must work offline and under a strict Content-Security-Policy). It uses the
// public HTTP API only, through relative URLs, so it also works behind a reverse proxy's path prefix.

const KEY_STORAGE = "gan-demo-api-key";
const SECTION_OF_TASK = { generate: "generate", super_resolve: "super-resolve", translate: "translate" };
// Small generator outputs (4 to 64 pixels) are shown at an integer zoom of about this many CSS pixels,
// so each model pixel stays a crisp square.
const THUMBNAIL_PX = 128;

const $ = (selector, root = document) => root.querySelector(selector);

/** An error to show to the user: the service's {"error": {"code", "message"}} or a local check. */
class PageError extends Error {
  constructor(message, code = "") {
    super(message);
    this.code = code;
  }
}

// ------------------------------------------------------------------ talking to the API

function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return ""; // storage disabled: the key then lives only in the input field
  }
}

/** fetch() with the API key header, turning every non-2xx answer into a PageError with its message. */
async function call(path, init = {}) {
  const headers = new Headers(init.headers || {});
  const key = storedKey() || $("#api-key").value.trim();
  if (key) headers.set("X-API-Key", key);
  let response;
  try {
    response = await fetch(path, { ...init, headers });
  } catch (err) {
    throw new PageError(`the service did not answer (${err.message})`, "network_error");
  }
  if (response.ok) return response;
  let code = `http_${response.status}`;
  let message = `${response.status} ${response.statusText}`.trim();
  try {
    const body = await response.json();
    if (body && body.error) ({ code, message } = body.error);
  } catch {
    // not the service's JSON error shape (a proxy's page, say): keep the status line
  }
  if (response.status === 401) openKeyForm();
  throw new PageError(message, code);
}

/** JSON text in which BigInt values are written as plain integers. Seeds go up to 2^63 - 1, beyond
 * the integers a JavaScript number holds exactly, so they travel as BigInt and are never rounded. */
function toJson(value) {
  const text = JSON.stringify(value, (_, v) => (typeof v === "bigint" ? `\u0000${v}` : v));
  return text.replace(/"\\u0000(-?\d+)"/g, "$1");
}

function parseSeed(text, what) {
  const trimmed = text.trim();
  // only the shape is checked here; the range is the service's to refuse, with its own message
  if (!/^-?\d+$/.test(trimmed)) throw new PageError(`${what} must be a whole number, got "${trimmed}"`);
  return BigInt(trimmed);
}

function randomSeed() {
  const [high, low] = crypto.getRandomValues(new Uint32Array(2));
  return ((BigInt(high & 0x7fffffff) << 32n) | BigInt(low)).toString();
}

function wholeNumber(text) {
  // sent as typed (NaN becomes null), so that the service's validation message is what the user sees
  return text.trim() === "" ? null : Number(text);
}

// ------------------------------------------------------------------ page helpers

function showError(box, err) {
  if (!err) {
    box.hidden = true;
    box.textContent = "";
    return;
  }
  box.textContent = err.code ? `${err.message} (${err.code})` : err.message;
  box.hidden = false;
}

/** Run one form action: busy state, and any error shown in `box` (never swallowed). */
async function action(form, box, work) {
  const buttons = form.querySelectorAll("button");
  showError(box, null);
  form.setAttribute("aria-busy", "true");
  buttons.forEach((b) => (b.disabled = true));
  try {
    await work();
  } catch (err) {
    showError(box, err instanceof PageError ? err : new PageError(String(err.message || err)));
  } finally {
    form.removeAttribute("aria-busy");
    buttons.forEach((b) => (b.disabled = false));
  }
}

function zoomed(img, naturalSize) {
  const zoom = Math.max(1, Math.floor(THUMBNAIL_PX / Math.max(1, naturalSize)));
  img.style.width = `${naturalSize * zoom}px`;
  return img;
}

function figure(src, alt, caption, size, pixels = true) {
  const fig = document.createElement("figure");
  const img = document.createElement("img");
  img.src = src;
  img.alt = alt;
  if (pixels) img.className = "pixels";
  if (size) zoomed(img, size);
  const cap = document.createElement("figcaption");
  cap.textContent = caption;
  fig.append(img, cap);
  return fig;
}

/** Object URLs of one view, released when the view shows something new. */
class Urls {
  constructor() {
    this.urls = [];
  }
  make(blob) {
    const url = URL.createObjectURL(blob);
    this.urls.push(url);
    return url;
  }
  release() {
    this.urls.forEach((url) => URL.revokeObjectURL(url));
    this.urls = [];
  }
}

// ------------------------------------------------------------------ models

const models = new Map(); // name -> ModelInfo of GET /models
let rendered = false;

function modelsOf(task) {
  return [...models.values()].filter((m) => m.task === task);
}

function selectedModel(form, task) {
  const picked = form.elements.model.value;
  return models.get(picked) || modelsOf(task)[0];
}

function fillPicker(form, list) {
  const select = form.elements.model;
  select.replaceChildren(...list.map((m) => new Option(`${m.name} (${m.architecture})`, m.name)));
  $(".model-picker", form).hidden = list.length < 2;
}

function describe(list) {
  return list.map((m) => `${m.name} (${m.task.replace("_", "-")}, ${m.state})`).join(" · ");
}

/** The status line; its `data-state` (loading, failed, warming, ready, empty) is for scripts. */
function setStatus(state, text) {
  const status = $("#status");
  status.dataset.state = state;
  status.textContent = text;
}

async function refreshModels() {
  let body;
  try {
    body = await (await call("models")).json();
  } catch (err) {
    setStatus("failed", "Could not list the models.");
    showError($("#page-error"), err);
    return;
  }
  showError($("#page-error"), null);
  models.clear();
  body.models.forEach((m) => models.set(m.name, m));
  if (!body.models.length) setStatus("empty", "This service serves no models.");
  else if (body.ready) setStatus("ready", `Ready: ${describe(body.models)}`);
  else setStatus("warming", `Warming up: ${describe(body.models)}`);
  if (!rendered) {
    rendered = true;
    for (const [task, id] of Object.entries(SECTION_OF_TASK)) {
      const list = modelsOf(task);
      const section = document.getElementById(id);
      section.hidden = list.length === 0;
      if (list.length) fillPicker($("form", section), list);
    }
    if (modelsOf("translate").length) renderAttributes();
  }
  if (!body.ready && body.models.length) setTimeout(refreshModels, 1000);
}

// ------------------------------------------------------------------ API key

function openKeyForm() {
  const details = $("#auth");
  if (!details.open) {
    details.open = true;
    $("#api-key").focus();
  }
}

function wireKeyForm() {
  $("#api-key").value = storedKey();
  $("#auth-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("#api-key").value.trim();
    try {
      if (key) sessionStorage.setItem(KEY_STORAGE, key);
      else sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // storage disabled: call() reads the field itself
    }
    refreshModels();
  });
  $("#auth-clear").addEventListener("click", () => {
    $("#api-key").value = "";
    try {
      sessionStorage.removeItem(KEY_STORAGE);
    } catch {
      // nothing stored
    }
  });
}

// ------------------------------------------------------------------ generate + interpolation

function wireGenerate() {
  const form = $("#generate-form");
  const walkForm = $("#walk-form");
  const first = randomSeed();
  form.elements.seed.value = first;
  walkForm.elements.from.value = first;
  walkForm.elements.to.value = randomSeed();

  $("#random-seed").addEventListener("click", () => {
    form.elements.seed.value = randomSeed();
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    action(form, $("#generate-error"), async () => {
      const model = selectedModel(form, "generate");
      if (!form.elements.seed.value.trim()) form.elements.seed.value = randomSeed();
      const seed = parseSeed(form.elements.seed.value, "The seed");
      const response = await call("generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: toJson({ model: model.name, num_images: wholeNumber(form.elements.count.value), seed }),
      });
      const data = await response.json();
      const results = $("#generate-results");
      results.replaceChildren(
        ...data.images.map((b64, i) =>
          figure(
            `data:${data.media_type};base64,${b64}`,
            `Generated image ${i + 1} of ${data.images.length}, seed ${seed}, model ${data.model}`,
            `#${i + 1}`,
            model.image_size,
          ),
        ),
      );
    });
  });

  const slider = $("#walk-slider");
  let frames = [];
  let endpoints = "";
  const show = (index) => {
    const img = $("#walk-frame");
    img.src = frames[index];
    img.alt = `Step ${index + 1} of ${frames.length} of the path ${endpoints}`;
    const t = frames.length > 1 ? index / (frames.length - 1) : 0;
    const position = `step ${index + 1} of ${frames.length} (t = ${t.toFixed(2)})`;
    $("#walk-position").value = position;
    slider.setAttribute("aria-valuetext", position);
  };
  slider.addEventListener("input", () => show(Number(slider.value)));

  walkForm.addEventListener("submit", (event) => {
    event.preventDefault();
    action(walkForm, $("#walk-error"), async () => {
      const model = selectedModel(form, "generate");
      const from = parseSeed(walkForm.elements.from.value, "From seed");
      const to = parseSeed(walkForm.elements.to.value, "To seed");
      const interpolate = {
        from: { seed: from },
        to: { seed: to },
        steps: wholeNumber(walkForm.elements.steps.value),
        method: walkForm.elements.method.value,
      };
      const response = await call("generate", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: toJson({ model: model.name, interpolate }),
      });
      const data = await response.json();
      frames = data.images.map((b64) => `data:${data.media_type};base64,${b64}`);
      endpoints = `from seed ${from} to seed ${to} (${interpolate.method}, model ${data.model})`;
      zoomed($("#walk-frame"), model.image_size);
      slider.max = String(frames.length - 1);
      slider.value = "0";
      show(0);
      $("#walk-view").hidden = false;
    });
  });
}

// ------------------------------------------------------------------ super-resolution

/** The upload form's image and model of `task` as a multipart body (a PageError when no image is chosen). */
function imageUpload(form, task) {
  const file = form.elements.image.files[0];
  if (!file) throw new PageError("Choose an image first.");
  const model = selectedModel(form, task);
  const upload = new FormData();
  upload.append("image", file);
  upload.append("model", model.name);
  return { file, model, upload };
}

function wireSuperResolve() {
  const form = $("#sr-form");
  const urls = new Urls();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    action(form, $("#sr-error"), async () => {
      const { file, model, upload } = imageUpload(form, "super_resolve");
      const response = await call("super-resolve", { method: "POST", body: upload });
      const scale = Number(response.headers.get("X-Scale")) || model.scale;
      const result = await response.blob();
      urls.release();
      const before = $("#sr-before");
      const after = $("#sr-after");
      before.src = urls.make(file);
      after.src = urls.make(result);
      await Promise.all([before.decode(), after.decode()]);
      // the same display width for both: the input is blown up by nearest neighbour (CSS `pixelated`),
      // so what differs between the two is what the model added, not the browser's smoothing
      for (const img of [before, after]) img.style.width = `${after.naturalWidth}px`;
      before.alt = `The uploaded image, ${before.naturalWidth}×${before.naturalHeight}, enlarged ×${scale} by nearest neighbour`;
      after.alt = `The super-resolved image, ${after.naturalWidth}×${after.naturalHeight}, from model ${model.name}`;
      $("#sr-before-caption").textContent = `Before: ${before.naturalWidth}×${before.naturalHeight}, nearest neighbour ×${scale}`;
      $("#sr-after-caption").textContent = `After: ${after.naturalWidth}×${after.naturalHeight}, ${model.name} ×${scale}`;
      $("#sr-view").hidden = false;
    });
  });
}

// ------------------------------------------------------------------ translation

let targets = []; // target sets added with "Add target"

function groupTitle(names, index) {
  const prefix = names[0].includes("_") ? names[0].slice(0, names[0].indexOf("_") + 1) : "";
  return prefix && names.every((n) => n.startsWith(prefix)) ? prefix.slice(0, -1) : `Group ${index + 1}`;
}

function choice(type, name, value, text, checked = false) {
  const label = document.createElement("label");
  const input = document.createElement("input");
  Object.assign(input, { type, name, value, checked });
  label.append(input, ` ${text}`);
  return label;
}

function renderAttributes() {
  const form = $("#translate-form");
  const model = selectedModel(form, "translate");
  const box = $("#attributes");
  const groups = model.exclusive_groups || [];
  const grouped = new Set(groups.flat());
  const fieldsets = groups.map((names, i) => {
    const set = document.createElement("fieldset");
    const legend = document.createElement("legend");
    const title = groupTitle(names, i);
    legend.textContent = title;
    const strip = (n) => (n.startsWith(`${title}_`) ? n.slice(title.length + 1) : n);
    // one of a group at most (the service refuses two), or none of it: a radio group with "none"
    set.append(legend, choice("radio", `group-${i}`, "", "none", true));
    names.forEach((n) => set.append(choice("radio", `group-${i}`, n, strip(n).replaceAll("_", " "))));
    return set;
  });
  const free = (model.attributes || []).filter((n) => !grouped.has(n));
  if (free.length) {
    const set = document.createElement("fieldset");
    const legend = document.createElement("legend");
    legend.textContent = groups.length ? "Other attributes" : "Attributes";
    set.append(legend, ...free.map((n) => choice("checkbox", "attribute", n, n.replaceAll("_", " "))));
    fieldsets.push(set);
  }
  box.replaceChildren(...fieldsets);
  targets = [];
  renderTargets();
}

function selectedAttributes() {
  const checked = new Set([...$("#attributes").querySelectorAll("input:checked")].map((i) => i.value));
  const model = selectedModel($("#translate-form"), "translate");
  return (model.attributes || []).filter((n) => checked.has(n)); // manifest order
}

const targetText = (set) => (set.length ? set.join(", ") : "no attributes");

function renderTargets() {
  const list = $("#target-list");
  if (!targets.length) {
    list.textContent = "the attributes selected above";
    return;
  }
  list.replaceChildren(
    ...targets.map((set, i) => {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "chip";
      button.textContent = `${targetText(set)} ✕`;
      button.setAttribute("aria-label", `Remove target ${targetText(set)}`);
      button.addEventListener("click", () => {
        targets.splice(i, 1);
        renderTargets();
      });
      return button;
    }),
  );
}

function wireTranslate() {
  const form = $("#translate-form");
  const urls = new Urls();
  form.elements.model.addEventListener("change", renderAttributes);
  $("#add-target").addEventListener("click", () => {
    targets.push(selectedAttributes());
    renderTargets();
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    action(form, $("#translate-error"), async () => {
      const { file, model, upload } = imageUpload(form, "translate");
      const sets = targets.length ? targets : [selectedAttributes()];
      sets.forEach((set) => upload.append("targets", set.join(",")));
      const response = await call("translate", { method: "POST", body: upload });
      urls.release();
      let images;
      if ((response.headers.get("Content-Type") || "").startsWith("application/json")) {
        const data = await response.json();
        images = data.images.map((b64, i) => [`data:${data.media_type};base64,${b64}`, data.targets[i]]);
      } else {
        images = [[urls.make(await response.blob()), sets[0]]];
      }
      const size = model.image_size;
      $("#translate-results").replaceChildren(
        figure(urls.make(file), "The uploaded image", "Input", size, false),
        ...images.map(([src, set]) => figure(src, `Translated to: ${targetText(set)}`, targetText(set), size)),
      );
    });
  });
}

// ------------------------------------------------------------------ start

wireKeyForm();
wireGenerate();
wireSuperResolve();
wireTranslate();
refreshModels();
