// Holoport voice in the page: each peer's voice heard from its seat through WebAudio.
//
// render/browser.py sends every 20 ms block of a peer's voice as its own binary message
// (magic "HPA1": peer, block number, speaking flag, the speaker's mouth in room metres,
// t_play, int16 PCM). Each peer gets one HRTF PannerNode at its mouth; each block is an
// AudioBufferSourceNode started at the peer's running playout time, kept about 60 ms
// ahead of the context's clock: blocks join sample-exactly while they arrive in time, and
// after an underrun the playout re-anchors ahead instead of playing catch-up, 20 ms further
// ahead each time (up to 160 ms: the page's main thread, which also draws, is the jitter
// here) and back towards 60 ms after calm seconds. Playout that has crept ahead of its
// target (the output clock stalled as the browser switched sinks, or runs slower than the
// sender's) catches up by skipping a block: a silent one as soon as it is 20 ms over, any
// one at 80 ms over; and a block that would sit more than MAX_AHEAD ahead is always
// dropped. Every skipped block is counted, and a flood cannot grow the page's queue. The listener follows the page's camera, or the headset's
// viewer pose in VR (viewer.js calls setListener every drawn frame).
//
// The microphone button captures with the browser's own echo cancellation (loudspeakers
// next to a microphone need it; headphones do not). It is capture only for now: the
// stream is shown on a level meter and exposed as window.holoportMic, not sent upstream.
'use strict';
window.HoloportVoice = (options) => {
  const { send, reportError, onChange, params } = options;
  const MAGIC = 0x31415048; // "HPA1" little-endian
  const HEADER = 44, RATE = 48000, MAX_SAMPLES = RATE / 5;
  const TARGET_AHEAD = 0.06; // s of voice scheduled ahead of the context clock, at least
  const TARGET_MAX = 0.16; // ... and at most, after underruns
  const MIN_AHEAD = 0.02; // less than this left: an underrun, re-anchor at the peer's target
  const MAX_AHEAD = 0.25; // more than this: drop the block (time-stretch-free catch-up)
  const QUIET_AFTER = 1.0; // s without a block: no longer speaking
  const KEEP = 2.0; // s of each peer's received voice kept for voiceLevels()
  const PANNER = { panningModel: 'HRTF', distanceModel: 'inverse', refDistance: 1, maxDistance: 50,
    rolloffFactor: 1, coneInnerAngle: 360, coneOuterAngle: 360 };

  const soundButton = document.getElementById('sound');
  const micButton = document.getElementById('mic');
  const meter = document.getElementById('meter');
  const list = document.getElementById('speakers');

  let ctx = null;
  const peers = new Map();
  const totals = { received: 0, dropped: 0, underruns: 0, late: 0, lost: 0, bad: 0, removed: 0 };
  const listener = { position: [0, 1.6, 0], forward: [0, 0, -1], up: [0, 1, 0] };
  const transits = []; // [arrival, ms from push_audio], the last second (meaningful on one machine's clock)
  let skew = null, skewWindow = null, skewReset = 0; // page wall clock minus the server's, estimated
  const mic = { on: false, level: 0, error: '', settings: null, analyser: null, data: null };

  const wallNow = () => (performance.timeOrigin + performance.now()) / 1000;

  function ensureContext() {
    if (ctx) return ctx;
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return null;
    try {
      try { ctx = new AC({ sampleRate: RATE, latencyHint: 'interactive' }); } catch (e) { ctx = new AC(); }
      new PannerNode(ctx, PANNER); // loads the HRTF set now, not under the first voice
    } catch (e) { // no audio here: the room is still drawn
      if (ctx) ctx.close().catch(() => {});
      ctx = null;
      reportError(`audio: ${e}`);
      return null;
    }
    ctx.onstatechange = updateUi;
    applyListener(ctx);
    updateUi();
    return ctx;
  }

  function resume() {
    const c = ensureContext();
    if (c && c.state !== 'running') c.resume().catch((e) => reportError(`audio: ${e}`));
  }
  // Browsers start audio only after a user gesture; any gesture on the page will do.
  for (const type of ['pointerdown', 'keydown', 'touchend']) document.addEventListener(type, resume, true);
  soundButton.addEventListener('click', resume);
  // Opened at load, not at the first voice: opening the output stalls the page for a while,
  // and that would be the first speaker's first blocks (it stays suspended until a gesture).
  ensureContext();

  // ---- the listener: the page's camera, or the headset ----------------------------------------
  function applyListener(target) {
    const l = target.listener, [px, py, pz] = listener.position, [fx, fy, fz] = listener.forward;
    const [ux, uy, uz] = listener.up;
    if (l.positionX) {
      l.positionX.value = px; l.positionY.value = py; l.positionZ.value = pz;
      l.forwardX.value = fx; l.forwardY.value = fy; l.forwardZ.value = fz;
      l.upX.value = ux; l.upY.value = uy; l.upZ.value = uz;
    } else {
      l.setPosition(px, py, pz);
      l.setOrientation(fx, fy, fz, ux, uy, uz);
    }
  }

  function setListener(position, forward, up) {
    const unit = (v) => { const n = Math.hypot(v[0], v[1], v[2]) || 1; return [v[0] / n, v[1] / n, v[2] / n]; };
    if (![...position, ...forward, ...up].every(Number.isFinite)) return;
    listener.position = [position[0], position[1], position[2]];
    listener.forward = unit(forward);
    listener.up = unit(up);
    if (ctx) applyListener(ctx);
  }

  // ---- peers ----------------------------------------------------------------------------------
  function peerState(id) {
    let p = peers.get(id);
    if (!p) {
      const panner = new PannerNode(ctx, PANNER);
      panner.connect(ctx.destination);
      p = { id, panner, next: 0, target: TARGET_AHEAD, calmSince: 0, lastSeq: 0, received: 0, lost: 0, late: 0, underruns: 0, dropped: 0, resyncs: 0,
        starts: 0, position: null, speaking: false, heard: 0, sources: new Set(), recent: [], recentLen: 0 };
      peers.set(id, p);
    }
    return p;
  }

  function removePeer(id) {
    const p = peers.get(id);
    if (!p) return;
    for (const src of p.sources) {
      try { src.stop(); } catch (e) { /* not started yet: disconnecting silences it */ }
      src.disconnect();
    }
    p.sources.clear();
    p.panner.disconnect();
    peers.delete(id);
    totals.removed++;
    changed();
  }

  function bad(message) {
    totals.bad++;
    reportError(message);
  }

  function onAudio(buf) {
    if (buf.byteLength < HEADER) return bad('short audio message');
    const dv = new DataView(buf);
    const id = dv.getUint32(4, true), seq = dv.getUint32(8, true), n = dv.getUint16(12, true);
    const flags = dv.getUint8(14);
    if (n === 0 || n > MAX_SAMPLES || buf.byteLength !== HEADER + 2 * n) return bad('audio length does not match its header');
    const position = [dv.getFloat32(16, true), dv.getFloat32(20, true), dv.getFloat32(24, true)];
    const tPlay = dv.getFloat64(28, true), tPush = dv.getFloat64(36, true);
    if (!position.every(Number.isFinite) || !Number.isFinite(tPush) || seq === 0) return bad('audio header out of range');
    const wall = wallNow(), d = wall - tPush;
    const arrived = performance.now();
    transits.push([arrived, d * 1000]);
    while (transits[0][0] < arrived - 1000 || transits.length > 500) transits.shift();
    // The smallest (arrival - push) seen is the clock offset plus the fastest transit.
    if (skewWindow === null || d < skewWindow) skewWindow = d;
    if (skew === null || d < skew) skew = d;
    if (wall > skewReset) { skew = skewWindow; skewWindow = null; skewReset = wall + 10; }
    if (!ensureContext()) return;

    const p = peerState(id);
    totals.received++;
    p.received++;
    if (p.lastSeq && seq <= p.lastSeq) { p.late++; totals.late++; return; } // its moment has passed
    if (p.lastSeq && seq > p.lastSeq + 1) { p.lost += seq - p.lastSeq - 1; totals.lost += seq - p.lastSeq - 1; }
    p.lastSeq = seq;
    if (!p.position || position.some((v, i) => v !== p.position[i])) {
      p.position = position;
      p.panner.positionX.value = position[0];
      p.panner.positionY.value = position[1];
      p.panner.positionZ.value = position[2];
      changed();
    }
    p.heard = performance.now();
    const speaking = (flags & 1) === 1;
    if (speaking !== p.speaking) { p.speaking = speaking; changed(); }

    const pcm = new Int16Array(buf, HEADER, n), samples = new Float32Array(n);
    for (let i = 0; i < n; i++) samples[i] = pcm[i] / 32767; // as render/browser.py scales it
    p.recent.push(samples);
    p.recentLen += n;
    while (p.recentLen - p.recent[0].length >= KEEP * RATE) p.recentLen -= p.recent.shift().length;
    play(p, samples, tPlay);
  }

  function play(p, samples, tPlay) {
    const now = ctx.currentTime, dur = samples.length / RATE;
    const late = p.next > 0 && p.next < now + MIN_AHEAD;
    if (late && now - p.next < 0.5) { // an underrun (a longer silence is a new talk spurt)
      p.underruns++;
      totals.underruns++;
      p.target = Math.min(TARGET_MAX, p.target + 0.02);
      p.calmSince = now;
    } else if (now - p.calmSince > 5) {
      p.target = Math.max(TARGET_AHEAD, p.target - dur / 10); // calm: 2 ms less each second
    }
    let want = now + p.target, notBefore = -Infinity;
    if (Number.isFinite(tPlay) && skew !== null) { // never earlier than t_play: audio early is the worse error
      const lead = (ctx.outputLatency || 0) + (ctx.baseLatency || 0);
      notBefore = Math.min(now + (tPlay - (wallNow() - skew)) - lead, now + MAX_AHEAD - dur);
      want = Math.max(want, notBefore);
    }
    want = Math.min(want, now + MAX_AHEAD - dur);
    let at = p.next;
    if (at < now + MIN_AHEAD) {
      if (!late) p.starts++;
      at = want;
    } else if (at < notBefore - 0.03) {
      p.resyncs++;
      at = notBefore;
    }
    const excess = at - Math.max(now + p.target, notBefore);
    if (at + dur > now + MAX_AHEAD || excess > 0.08 || (excess > 0.02 && quiet(samples))) {
      p.dropped++;
      totals.dropped++;
      return;
    }
    const buffer = new AudioBuffer({ length: samples.length, sampleRate: RATE, numberOfChannels: 1 });
    buffer.copyToChannel(samples, 0);
    const src = new AudioBufferSourceNode(ctx, { buffer });
    src.connect(p.panner);
    src.onended = () => { p.sources.delete(src); src.disconnect(); };
    src.start(at);
    p.sources.add(src);
    p.next = at + dur;
  }

  function quiet(samples) {
    for (let i = 0; i < samples.length; i++) if (samples[i] > 0.003 || samples[i] < -0.003) return false;
    return true;
  }

  // ---- who is speaking ------------------------------------------------------------------------
  function changed() {
    updateUi();
    onChange();
  }

  function speakers() {
    return [...peers.values()].filter((p) => p.speaking && p.position).map((p) => ({ id: p.id, position: p.position }));
  }

  function updateUi() {
    soundButton.hidden = !!ctx && ctx.state === 'running';
    const ids = [...peers.keys()].sort((a, b) => a - b);
    if (list.childElementCount !== ids.length || ids.some((id, i) => list.children[i].dataset.peer !== String(id))) {
      list.replaceChildren(...ids.map((id) => {
        const li = document.createElement('li');
        li.dataset.peer = String(id);
        li.textContent = `peer ${id}`;
        return li;
      }));
    }
    for (const li of list.children) li.classList.toggle('speaking', !!peers.get(+li.dataset.peer)?.speaking);
  }

  setInterval(() => {
    const now = performance.now();
    for (const p of peers.values()) {
      if (p.speaking && now - p.heard > QUIET_AFTER * 1000) { p.speaking = false; changed(); }
    }
    if (mic.analyser) {
      mic.analyser.getFloatTimeDomainData(mic.data);
      mic.level = Math.max(rms(mic.data), mic.level * 0.8); // a peak meter: falls back slowly
      meter.value = Math.min(1, mic.level * 4);
    }
  }, 100);

  // ---- the microphone (capture only, see the top) -----------------------------------------------
  async function startMic() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('no getUserMedia here (it needs https or localhost)');
    }
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true } });
    const c = ensureContext();
    resume();
    const analyser = new AnalyserNode(c, { fftSize: 2048 });
    c.createMediaStreamSource(stream).connect(analyser); // analysed, never played: no feedback
    const track = stream.getAudioTracks()[0];
    const s = track ? track.getSettings() : {};
    Object.assign(mic, { on: true, error: '', analyser, data: new Float32Array(analyser.fftSize), stream,
      settings: { echo_cancellation: s.echoCancellation === true, noise_suppression: s.noiseSuppression === true,
        auto_gain_control: s.autoGainControl === true } });
    window.holoportMic = stream;
    micButton.textContent = 'Mic off';
    meter.hidden = false;
  }

  function stopMic() {
    if (mic.stream) for (const t of mic.stream.getTracks()) t.stop();
    Object.assign(mic, { on: false, level: 0, analyser: null, data: null, stream: null });
    window.holoportMic = null;
    micButton.textContent = 'Mic';
    meter.hidden = true;
  }

  function toggleMic() {
    if (mic.on) return stopMic();
    startMic().catch((e) => { mic.error = String(e).slice(0, 60); reportError(`microphone: ${e}`); });
  }
  micButton.addEventListener('click', toggleMic);
  if (params.get('mic') === '1') toggleMic();

  // ---- the spatial check: each peer's recent voice, rendered offline as the page hears it ------
  const rms = (a) => { let s = 0; for (let i = 0; i < a.length; i++) s += a[i] * a[i]; return Math.sqrt(s / Math.max(1, a.length)); };

  async function voiceLevels(seconds) {
    const out = {};
    for (const p of peers.values()) {
      const n = Math.min(p.recentLen, Math.round(Math.max(0.02, Math.min(KEEP, seconds)) * RATE));
      if (!n || !p.position) continue;
      const mono = new Float32Array(n);
      let end = n;
      for (let i = p.recent.length - 1; i >= 0 && end > 0; i--) {
        const block = p.recent[i], take = Math.min(block.length, end);
        mono.set(block.subarray(block.length - take), end - take);
        end -= take;
      }
      const off = new OfflineAudioContext(2, n, RATE);
      applyListener(off);
      const panner = new PannerNode(off, { ...PANNER, positionX: p.position[0], positionY: p.position[1],
        positionZ: p.position[2] });
      const buffer = new AudioBuffer({ length: n, sampleRate: RATE, numberOfChannels: 1 });
      buffer.copyToChannel(mono, 0);
      const src = new AudioBufferSourceNode(off, { buffer });
      src.connect(panner).connect(off.destination);
      src.start(0);
      const rendered = await off.startRendering();
      out[p.id] = [rms(rendered.getChannelData(0)), rms(rendered.getChannelData(1))];
    }
    return out;
  }

  function onControl(msg) {
    if (msg.type === 'peer_left') {
      removePeer(msg.peer);
      return true;
    }
    if (msg.type === 'voice_levels') {
      voiceLevels(+msg.seconds || 1).then((levels) => send({ type: 'voice_levels', id: msg.id, peers: levels }))
        .catch((e) => reportError(`voice levels: ${e}`));
      return true;
    }
    return false;
  }

  // ---- what the page reports (render/browser.py keeps it as the page's stats["audio"]) -------
  function stats() {
    const now = ctx ? ctx.currentTime : 0;
    const cut = performance.now() - 1000;
    const sorted = transits.filter((t) => t[0] >= cut).map((t) => t[1]).sort((a, b) => a - b);
    const pct = (q) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] : 0);
    const out = { context: ctx ? ctx.state : 'none', sample_rate: ctx ? ctx.sampleRate : 0,
      sound_button: !soundButton.hidden,
      output_latency: ctx ? (ctx.outputLatency || 0) + (ctx.baseLatency || 0) : 0, ...totals, ahead: 0,
      listener: { position: listener.position, forward: listener.forward, up: listener.up },
      speaking: speakers().map((s) => s.id).slice(0, 64),
      transit_ms: { p50: pct(0.5), p95: pct(0.95), max: sorted.length ? sorted[sorted.length - 1] : 0 },
      mic: { on: mic.on, level: mic.level, error: mic.error, ...(mic.settings || {}) }, peers: {} };
    let count = 0;
    for (const p of peers.values()) {
      const ahead = Math.max(0, p.next - now);
      out.ahead = Math.max(out.ahead, ahead);
      if (count++ >= 60) continue;
      out.peers[p.id] = { received: p.received, last_seq: p.lastSeq, lost: p.lost, late: p.late,
        underruns: p.underruns, dropped: p.dropped, resyncs: p.resyncs, starts: p.starts, ahead, target: p.target,
        playing: p.sources.size, speaking: p.speaking, position: p.position || [0, 0, 0] };
    }
    return out;
  }

  return { MAGIC, onAudio, onControl, setListener, speakers, stats, resume };
};
