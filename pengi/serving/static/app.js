// The pengi web page: pick or record a clip, draw it, ask the server, show the answer.
// Everything runs in the browser with its own APIs (Web Audio, MediaRecorder, canvas); nothing is loaded from
// anywhere but this server. Recordings (webm/opus) and formats the server cannot decode are decoded here and
// uploaded as 16-bit WAV at the model's sample rate; wav, flac, ogg and mp3 files are uploaded as they are.
// URLs are relative, so that the page also works behind a reverse proxy that serves it under a path prefix.
"use strict";

const SERVER_FORMATS = ["wav", "flac", "ogg", "mp3"];
const $ = (id) => document.getElementById(id);
const state = { model: null, upload: null, uploadName: null, duration: 0, samples: null, sampleRate: 0,
                windows: [], recorder: null, busy: false };

function setState(s) { document.body.dataset.state = s; }
function showError(message) { $("error").textContent = message || ""; if (message) setState("error"); }

function headers() {
  const key = $("api-key").value.trim() || localStorage.getItem("pengi-api-key") || "";
  return key ? { Authorization: "Bearer " + key } : {};
}

// ---------------------------------------------------------------------------- the model
async function loadModel() {
  let response;
  try {
    response = await fetch("v1/models", { headers: headers() });
  } catch (err) {
    $("model-line").textContent = "cannot reach the server: " + err;
    return;
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    $("model-line").textContent = (body.error && body.error.message) || ("GET /v1/models: " + response.status);
    if (response.status === 401) $("key-box").open = true;
    setState("error");
    return;
  }
  const model = body.data[0];
  state.model = model;
  const p = model.pengi;
  $("model-line").textContent = `${model.id}: a ${p.kind === "clap" ? "CLAP" : "Pengi"} model on ${p.device}` +
    ` (${p.dtype}), ${p.sample_rate} Hz, ${p.clip_seconds} s clips; files up to ${p.max_audio_mb} MB and ` +
    `${p.max_audio_seconds} s`;
  if (p.kind === "clap") {
    $("pengi-controls").hidden = true;
    $("clap-controls").hidden = false;
    $("ask-title").textContent = "Labels";
    $("go").textContent = "Classify";
  } else {
    const task = $("task");
    task.innerHTML = "";
    for (const prompt of p.task_prompts) task.add(new Option(prompt, prompt));
    task.add(new Option("your own question…", ""));
    $("prompt").value = p.task_prompts[0];
    task.onchange = () => {
      $("prompt").value = task.value;
      if (!task.value) $("prompt").focus();
    };
    $("prompt").oninput = () => {
      const known = [...task.options].some((o) => o.value === $("prompt").value);
      task.value = known ? $("prompt").value : "";
    };
  }
  setState("ready");
  updateGo();
}

function updateGo() { $("go").disabled = !state.model || !state.upload || state.busy; }

// ---------------------------------------------------------------------------- a clip in
function extensionOf(name) {
  const m = /\.([a-z0-9]+)$/i.exec(name || "");
  return m ? m[1].toLowerCase() : "";
}

async function useBlob(blob, name, convert = false) {
  showError("");
  $("answer").textContent = "";
  $("latency").textContent = "";
  $("warnings").textContent = "";
  $("windows-table").hidden = true;
  $("scores").hidden = true;
  state.windows = [];
  const bytes = await blob.arrayBuffer();
  let decoded = null;
  try {
    const ctx = new (window.AudioContext || window.webkitAudioContext)();
    decoded = await ctx.decodeAudioData(bytes.slice(0));
    ctx.close();
  } catch (err) {
    decoded = null;
  }
  const ext = extensionOf(name);
  const maxBytes = state.model ? state.model.pengi.max_audio_mb * 1024 * 1024 : Infinity;
  if (!convert && SERVER_FORMATS.includes(ext) && blob.size <= maxBytes) {
    state.upload = blob;  // the server decodes it itself: the answer is the one `pengi` gives for this file
    state.uploadName = name;
  } else if (decoded) {
    const rate = state.model ? state.model.pengi.sample_rate : 16000;
    const mono = await resample(decoded, rate);
    state.upload = new Blob([encodeWav(mono, rate)], { type: "audio/wav" });
    state.uploadName = name.replace(/\.[^.]*$/, "") + ".wav";
  } else {
    state.upload = null;
    updateGo();
    showError(`${name}: this browser cannot decode it, and the server reads only ${SERVER_FORMATS.join(", ")}`);
    return;
  }
  $("clip").hidden = false;
  $("player").src = URL.createObjectURL(blob);
  if (decoded) {
    state.samples = mixDown(decoded);
    state.sampleRate = decoded.sampleRate;
    state.duration = decoded.duration;
    $("clip-info").textContent = `${name}: ${decoded.duration.toFixed(2)} s, ${decoded.numberOfChannels} ` +
      `channel(s), ${decoded.sampleRate} Hz` + (state.upload !== blob ? " (uploaded as wav)" : "");
    drawWave();
    drawSpectrogram($("spec"), state.samples, state.sampleRate);
  } else {
    state.samples = null;
    $("clip-info").textContent = `${name}: the browser cannot draw it; the server will decode it`;
  }
  const clip = state.model ? state.model.pengi.clip_seconds : 1;
  $("windows").checked = !!decoded && decoded.duration > clip * 1.5;
  updateGo();
}

function mixDown(buffer) {
  const out = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const data = buffer.getChannelData(c);
    for (let i = 0; i < data.length; i++) out[i] += data[i] / buffer.numberOfChannels;
  }
  return out;
}

async function resample(buffer, rate) {
  const length = Math.max(1, Math.ceil(buffer.duration * rate));
  const offline = new OfflineAudioContext(1, length, rate);
  const source = offline.createBufferSource();
  source.buffer = buffer;
  source.connect(offline.destination);
  source.start();
  const rendered = await offline.startRendering();
  return rendered.getChannelData(0);
}

function encodeWav(samples, rate) {
  const view = new DataView(new ArrayBuffer(44 + samples.length * 2));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return view.buffer;
}

// ---------------------------------------------------------------------------- drawing
function drawWave(active = -1) {
  const canvas = $("wave");
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, x = state.samples;
  g.clearRect(0, 0, w, h);
  if (!x) return;
  const spp = x.length / w;
  g.fillStyle = "#2f6fdf";
  for (let px = 0; px < w; px++) {
    let lo = 1, hi = -1;
    const end = Math.min(x.length, Math.floor((px + 1) * spp) + 1);
    for (let i = Math.floor(px * spp); i < end; i++) { if (x[i] < lo) lo = x[i]; if (x[i] > hi) hi = x[i]; }
    if (hi < lo) continue;
    const top = (1 - hi) * h / 2, bottom = (1 - lo) * h / 2;
    g.fillRect(px, top, 1, Math.max(1, bottom - top));
  }
  // the windows of a windowed answer, the hovered one highlighted
  state.windows.forEach((win, i) => {
    const a = win.start / state.duration * w, b = win.end / state.duration * w;
    if (i === active) { g.fillStyle = "rgba(47,111,223,.18)"; g.fillRect(a, 0, b - a, h); }
    g.fillStyle = "rgba(29,35,41,.45)";
    g.fillRect(Math.round(a), 0, 1, h);
  });
}

function fft(re, im) {  // in place, radix 2; length a power of two
  const n = re.length;
  for (let i = 1, j = 0; i < n; i++) {
    let bit = n >> 1;
    for (; j & bit; bit >>= 1) j ^= bit;
    j ^= bit;
    if (i < j) { [re[i], re[j]] = [re[j], re[i]]; [im[i], im[j]] = [im[j], im[i]]; }
  }
  for (let len = 2; len <= n; len <<= 1) {
    const ang = -2 * Math.PI / len, wr = Math.cos(ang), wi = Math.sin(ang);
    for (let i = 0; i < n; i += len) {
      let cr = 1, ci = 0;
      for (let k = 0; k < len / 2; k++) {
        const a = i + k, b = a + len / 2;
        const tr = re[b] * cr - im[b] * ci, ti = re[b] * ci + im[b] * cr;
        re[b] = re[a] - tr; im[b] = im[a] - ti; re[a] += tr; im[a] += ti;
        const ncr = cr * wr - ci * wi; ci = cr * wi + ci * wr; cr = ncr;
      }
    }
  }
}

function colour(v) {  // 0..1 -> a dark-blue-to-yellow ramp
  const stops = [[15, 23, 32], [40, 60, 140], [32, 144, 140], [120, 200, 80], [250, 230, 40]];
  const t = Math.max(0, Math.min(1, v)) * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(t));
  const f = t - i;
  return stops[i].map((c, k) => Math.round(c + (stops[i + 1][k] - c) * f));
}

function drawSpectrogram(canvas, x, rate) {
  const g = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, n = 512;
  const image = g.createImageData(w, h);
  const hann = Float32Array.from({ length: n }, (_, i) => 0.5 - 0.5 * Math.cos(2 * Math.PI * i / n));
  const bins = n / 2, columns = [];
  let peak = -Infinity;
  for (let px = 0; px < w; px++) {
    const start = Math.floor(px * Math.max(0, x.length - n) / Math.max(1, w - 1));
    const re = new Float32Array(n), im = new Float32Array(n);
    for (let i = 0; i < n; i++) re[i] = (x[start + i] || 0) * hann[i];
    fft(re, im);
    const col = new Float32Array(bins);
    for (let b = 0; b < bins; b++) {
      col[b] = 10 * Math.log10(re[b] * re[b] + im[b] * im[b] + 1e-10);
      if (col[b] > peak) peak = col[b];
    }
    columns.push(col);
  }
  const floor = peak - 80;
  for (let px = 0; px < w; px++) {
    for (let y = 0; y < h; y++) {
      // a log-frequency axis from 50 Hz to Nyquist, low frequencies at the bottom
      const f = 50 * Math.pow((rate / 2) / 50, (h - 1 - y) / (h - 1));
      const b = Math.min(bins - 1, Math.round(f / (rate / 2) * bins));
      const [r, gr, bl] = colour((columns[px][b] - floor) / 80);
      const o = (y * w + px) * 4;
      image.data[o] = r; image.data[o + 1] = gr; image.data[o + 2] = bl; image.data[o + 3] = 255;
    }
  }
  g.putImageData(image, 0, 0);
  g.font = "11px system-ui, sans-serif";
  g.fillStyle = "rgba(255,255,255,.85)";
  for (const f of [100, 1000, 4000, 16000]) {
    if (f >= rate / 2) continue;
    const y = (h - 1) * (1 - Math.log(f / 50) / Math.log((rate / 2) / 50));
    g.fillRect(0, Math.round(y), 6, 1);
    g.fillText(f >= 1000 ? f / 1000 + " kHz" : f + " Hz", 9, Math.round(y) + 4);
  }
}

// ---------------------------------------------------------------------------- recording
async function toggleRecording() {
  if (state.recorder) { state.recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    showError("cannot record: " + err.message);
    return;
  }
  const recorder = new MediaRecorder(stream);
  const chunks = [];
  const started = performance.now();
  const timer = setInterval(() => {
    $("rec-time").textContent = ((performance.now() - started) / 1000).toFixed(1) + " s";
  }, 100);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = async () => {
    clearInterval(timer);
    stream.getTracks().forEach((t) => t.stop());
    state.recorder = null;
    $("record").classList.remove("recording");
    $("record").innerHTML = "&#9679; Record";
    const type = recorder.mimeType || "audio/webm";
    const ext = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
    // MediaRecorder makes webm/opus (Chromium), ogg/opus (Firefox) or mp4 (Safari): always converted to wav here
    await useBlob(new Blob(chunks, { type }), "recording." + ext, true);
  };
  recorder.start();
  state.recorder = recorder;
  $("record").classList.add("recording");
  $("record").textContent = "■ Stop";
}

// ---------------------------------------------------------------------------- asking
function seconds(t) { return t.toFixed(2) + " s"; }

async function ask() {
  if (!state.upload || state.busy) return;
  const clap = state.model.pengi.kind === "clap";
  const form = new FormData();
  form.append("file", state.upload, state.uploadName);
  form.append("model", state.model.id);
  let url;
  if (clap) {
    url = "v1/audio/classifications";
    form.append("labels", $("labels").value);
    if ($("template").value.trim()) form.append("template", $("template").value.trim());
  } else {
    url = "v1/generate";
    form.append("prompt", $("prompt").value);
    if ($("windows").checked) form.append("windows", "true");
  }
  state.busy = true;
  updateGo();
  setState("busy");
  showError("");
  $("answer").textContent = "…";
  $("latency").textContent = "";
  $("warnings").textContent = "";
  const started = performance.now();
  let response, body;
  try {
    response = await fetch(url, { method: "POST", body: form, headers: headers() });
    body = await response.json();
  } catch (err) {
    body = { error: { message: "no answer from the server: " + err } };
  } finally {
    state.busy = false;
    updateGo();
  }
  const ms = performance.now() - started;
  if (!response || !response.ok || body.error) {
    $("answer").textContent = "";
    showError((body.error && body.error.message) || ("HTTP " + (response && response.status)));
    if (response && response.status === 401) $("key-box").open = true;
    return;
  }
  const key = $("api-key").value.trim();
  if (key) localStorage.setItem("pengi-api-key", key);
  const result = (clap ? body.data : body.results)[0];
  $("latency").textContent = `${Math.round(ms)} ms round trip` +
    (body.timing ? `, ${Math.round(body.timing.total_ms)} ms on the server` : "");
  $("warnings").textContent = (body.warnings || []).join(" ");
  if (clap) showScores(result); else if (result.windows) showWindows(result.windows); else showAnswer(result);
  setState("done");
}

function showAnswer(result) {
  $("answer").textContent = result.text !== undefined ? result.text : result.texts.join(" | ");
  $("windows-table").hidden = true;
  state.windows = [];
  drawWave();
}

function showWindows(windows) {
  $("answer").textContent = `${windows.length} window${windows.length === 1 ? "" : "s"}`;
  const tbody = $("windows-table").querySelector("tbody");
  tbody.innerHTML = "";
  windows.forEach((win, i) => {
    const tr = document.createElement("tr");
    const text = win.text !== undefined ? win.text : win.texts.join(" | ");
    for (const [cls, value] of [["t", seconds(win.start)], ["t", seconds(win.end)], ["", text]]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = value;
      tr.appendChild(td);
    }
    tr.addEventListener("mouseenter", () => drawWave(i));
    tr.addEventListener("mouseleave", () => drawWave());
    tr.addEventListener("click", () => { $("player").currentTime = win.start; $("player").play(); });
    tbody.appendChild(tr);
  });
  $("windows-table").hidden = false;
  state.windows = windows;
  drawWave();
}

function showScores(result) {
  $("answer").textContent = result.label;
  const box = $("scores");
  box.innerHTML = "";
  result.labels.forEach((label, i) => {
    const row = document.createElement("div");
    row.className = "bar";
    const name = document.createElement("span");
    name.textContent = label;
    const bar = document.createElement("div");
    bar.style.width = Math.max(1, result.scores[i] * 100) + "%";
    const value = document.createElement("span");
    value.textContent = result.scores[i].toFixed(3);
    row.append(name, bar, value);
    box.appendChild(row);
  });
  box.hidden = false;
}

// ---------------------------------------------------------------------------- wiring
function init() {
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    const file = e.dataTransfer.files[0];
    if (file) useBlob(file, file.name);
  });
  $("file").addEventListener("change", (e) => {
    const file = e.target.files[0];
    if (file) useBlob(file, file.name);
  });
  $("record").addEventListener("click", toggleRecording);
  $("go").addEventListener("click", ask);
  $("prompt").addEventListener("keydown", (e) => { if (e.key === "Enter") ask(); });
  $("api-key").value = localStorage.getItem("pengi-api-key") || "";
  $("api-key").addEventListener("change", loadModel);
  if (!window.MediaRecorder || !navigator.mediaDevices) {
    $("record").disabled = true;
    $("record").title = "this browser cannot record here (it needs MediaRecorder and a secure origin)";
  }
  loadModel();
}

init();
