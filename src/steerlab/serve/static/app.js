// The slider page: pick a kit, set one scale per axis, compare unsteered and steered answers as they stream.
// Plain browser JavaScript, no build step and nothing fetched from outside this server.
"use strict";

const RANGE = 3; // sliders run from -RANGE to +RANGE
// With `steerlab serve --api-keys` every API call needs `Authorization: Bearer KEY`. The key lives in this tab's
// sessionStorage only: it goes when the tab closes, and other sites and tabs never see it.
const KEY_SLOT = "steerlab-api-key";
const state = { model: "", catalogue: [], axes: [], runs: {} };
const $ = (id) => document.getElementById(id);

class AuthError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function apiKey() {
  return sessionStorage.getItem(KEY_SLOT) || "";
}

// Every API call goes through here: the key is attached, and a 401 or 403 becomes an AuthError the page explains.
async function api(url, options = {}) {
  const headers = { ...(options.headers || {}) };
  if (apiKey()) headers.Authorization = `Bearer ${apiKey()}`;
  const response = await fetch(url, { ...options, headers });
  if (response.status === 401 || response.status === 403) {
    const problem = await response.json().catch(() => ({}));
    throw new AuthError(response.status, problem.error ? problem.error.message : `HTTP ${response.status}`);
  }
  return response;
}

function showAuth(error) {
  $("key-form").hidden = false;
  document.body.dataset.auth = String(error.status);
  if (error.status === 403) {
    $("auth-note").textContent = `Your API key may not do this (403): ${error.message}`;
  } else if (apiKey()) {
    $("auth-note").textContent = `The server refused this API key (401): ${error.message} Enter a valid key.`;
  } else {
    $("auth-note").textContent = "This server needs an API key (401). Enter yours above; it is kept in this tab only.";
  }
}

function setUpKeyForm() {
  $("key-form").hidden = !apiKey();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (!key) return;
    sessionStorage.setItem(KEY_SLOT, key);
    $("api-key").value = "";
    load().catch(failed);
  });
  $("key-forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_SLOT);
    load().catch(failed);
  });
}

function init() {
  setUpKeyForm();
  $("kit").addEventListener("change", showKit);
  $("go").addEventListener("click", () => { run("unsteered"); run("steered"); });
  return load();
}

// (Re)loads the model and the catalogue this key may steer with; run again after the key changes.
async function load() {
  delete document.body.dataset.ready;
  const [models, catalogue] = await Promise.all([getJson("/v1/models"), getJson("/v1/steering")]);
  $("auth-note").textContent = "";
  delete document.body.dataset.auth;
  state.model = models.data[0].id;
  $("model").textContent = `model: ${state.model}`;
  state.catalogue = catalogue.data;
  const select = $("kit");
  select.replaceChildren();
  for (const item of state.catalogue) {
    const option = document.createElement("option");
    option.value = item.id;
    option.textContent = `${item.id} (${item.kind}, ${item.axes.length} ${item.axes.length === 1 ? "axis" : "axes"})`;
    select.appendChild(option);
  }
  if (catalogue.default) select.value = catalogue.default;
  showKit();
  document.body.dataset.ready = "true";
}

function failed(error) {
  if (error instanceof AuthError) {
    showAuth(error);
    state.catalogue = [];
    $("kit").replaceChildren();
    showKit();
    $("kit-note").textContent = "What you may steer with is listed once the server accepts your key.";
    return;
  }
  $("kit-note").textContent = `could not load: ${error.message}`;
}

async function getJson(url) {
  const response = await api(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

function showKit() {
  const item = state.catalogue.find((entry) => entry.id === $("kit").value);
  const box = $("axes");
  box.replaceChildren();
  state.axes = [];
  $("kit-note").textContent = !item ? "No vectors or kits in the server's --kits folder." : item.error || "";
  if (!item) return;
  for (const axis of item.axes) box.appendChild(axisRow(axis));
}

function axisRow(axis) {
  const row = document.createElement("div");
  row.className = "axis";
  row.dataset.ref = axis.ref;

  const name = document.createElement("span");
  name.className = "axis-name";
  name.tabIndex = 0;
  name.textContent = axis.name;
  name.addEventListener("mouseenter", () => showCard(axis, name));
  name.addEventListener("focus", () => showCard(axis, name));
  name.addEventListener("mouseleave", hideCard);
  name.addEventListener("blur", hideCard);

  const track = document.createElement("div");
  track.className = "track";
  const recommended = Math.min(Math.abs(axis.card.recommended_scale || 0), RANGE);
  const band = document.createElement("div");
  band.className = "band";
  band.style.left = `${percent(-recommended)}%`;
  band.style.width = `${percent(recommended) - percent(-recommended)}%`;
  band.title = `recommended range ±${recommended}`;
  const tick = document.createElement("div");
  tick.className = "tick";
  tick.style.left = `${percent(clamp(axis.card.recommended_scale || 0))}%`;
  const zero = document.createElement("div");
  zero.className = "zero";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.min = String(-RANGE);
  slider.max = String(RANGE);
  slider.step = "0.05";
  slider.value = String(clamp(axis.scale));
  slider.setAttribute("aria-label", `scale of ${axis.name}`);
  track.append(band, zero, tick, slider);
  track.addEventListener("mouseenter", () => showCard(axis, track));
  track.addEventListener("mouseleave", hideCard);

  const output = document.createElement("output");
  output.textContent = Number(slider.value).toFixed(2);
  slider.addEventListener("input", () => { output.textContent = Number(slider.value).toFixed(2); });
  // Letting go of a slider re-asks the steered side only: the unsteered answer cannot change.
  slider.addEventListener("change", () => { if ($("prompt").value.trim()) run("steered"); });

  row.append(name, track, output);
  state.axes.push({ axis, slider });
  return row;
}

function percent(value) {
  return ((value + RANGE) / (2 * RANGE)) * 100;
}

function clamp(value) {
  return Math.max(-RANGE, Math.min(RANGE, Number(value) || 0));
}

function showCard(axis, anchor) {
  const card = axis.card;
  const facts = [
    ["vector", card.name || axis.name],
    ["description", card.description],
    ["base model", card.base_model],
    ["method", [card.method, card.position].filter(Boolean).join(" at ")],
    ["pairs", card.n_pairs],
    ["recommended", `scale ${card.recommended_scale}, layers ${layerText(card.recommended_layers)}`],
    ["applied at", `layers ${layerText(axis.layers)}`],
    ["author", card.author],
    ["licence", card.license],
    ["created", card.created_at],
    ["sha256", card.sha256],
  ].filter(([, value]) => value !== undefined && value !== null && value !== "");
  const list = document.createElement("dl");
  for (const [label, value] of facts) {
    const dt = document.createElement("dt");
    dt.textContent = label;
    const dd = document.createElement("dd");
    dd.textContent = String(value);
    list.append(dt, dd);
  }
  const tip = $("card-tip");
  tip.replaceChildren(list);
  const box = anchor.getBoundingClientRect();
  tip.style.left = `${Math.max(8, box.left)}px`;
  tip.style.top = `${box.bottom + 6}px`;
  tip.hidden = false;
}

function hideCard() {
  $("card-tip").hidden = true;
}

function layerText(layers) {
  if (!layers || !layers.length) return "all";
  const sorted = [...layers].sort((a, b) => a - b);
  const contiguous = sorted[sorted.length - 1] - sorted[0] === sorted.length - 1;
  return contiguous && sorted.length > 2 ? `${sorted[0]}-${sorted[sorted.length - 1]}` : sorted.join(",");
}

function steering() {
  return state.axes.map(({ axis, slider }) => ({ vector: axis.ref, scale: Number(slider.value), layers: axis.layers }));
}

async function run(side) {
  const pane = $(side);
  if (state.runs[side]) state.runs[side].abort();
  const controller = new AbortController();
  state.runs[side] = controller;
  pane.textContent = "";
  pane.dataset.state = "running";
  const body = {
    model: state.model,
    messages: [{ role: "user", content: $("prompt").value }],
    max_tokens: Number($("max-tokens").value) || 48,
    temperature: 0,
    stream: true,
    steering: side === "steered" ? steering() : [],
  };
  try {
    const response = await api("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(body),
      signal: controller.signal,
    });
    if (!response.ok) {
      const problem = await response.json().catch(() => ({}));
      throw new Error(problem.error ? problem.error.message : `HTTP ${response.status}`);
    }
    await readStream(response, (text) => { pane.textContent += text; });
    pane.dataset.state = "done";
  } catch (error) {
    if (controller.signal.aborted) return;
    pane.textContent = `error: ${error.message}`;
    pane.dataset.state = "error";
    if (error instanceof AuthError) showAuth(error);
  }
}

async function readStream(response, onText) {
  // Server-sent events: "data: {json}" blocks separated by blank lines, ending with "data: [DONE]".
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data || data === "[DONE]") continue;
      const event = JSON.parse(data);
      if (event.error) throw new Error(event.error.message);
      for (const choice of event.choices || []) {
        if (choice.delta && choice.delta.content) onText(choice.delta.content);
      }
    }
  }
}

init().catch(failed);
