// Holoport viewer: draws the room and everyone's points streamed by render/browser.py.
// Plain WebGL2, no framework. Frames are drawn only when a new frame or a camera move
// arrives; a frame that arrives while another waits replaces it; each drawn frame is
// acknowledged so that the server sends the next one (see render/browser.py for the wire).
// Voice messages go to voice.js (spatial audio); the seats of whoever speaks glow here.
'use strict';
(() => {
  const MAGIC = 0x31465048; // "HPF1" little-endian
  const params = new URLSearchParams(location.search);
  const num = (key, fallback) => (params.has(key) && isFinite(+params.get(key)) ? +params.get(key) : fallback);

  const canvas = document.getElementById('view');
  const statusEl = document.getElementById('status');
  const vrButton = document.getElementById('vr');
  const gl = canvas.getContext('webgl2', { antialias: false, alpha: false, depth: true, stencil: false,
    premultipliedAlpha: false, preserveDrawingBuffer: false, powerPreference: 'high-performance' });

  const rendererName = (() => {
    const info = gl && gl.getExtension('WEBGL_debug_renderer_info');
    return gl ? String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER)) : '';
  })();
  // gl.POINTS on a GPU; a JavaScript splat loop where WebGL itself runs on the CPU.
  const software = /swiftshader|llvmpipe|softpipe|software/i.test(rendererName);
  const drawMode = ['points', 'splat'].includes(params.get('draw')) ? params.get('draw') : (software ? 'splat' : 'points');
  let ws = null;
  const stats = { frames: 0, draws: 0, points: 0, received: 0, replaced: 0 };
  const frameTimes = [];
  const drawTimes = []; // JavaScript time per draw, ms (the GL work itself runs on asynchronously)
  let xrSupported = false;
  let xrSession = null;

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }
  function reportError(message) { send({ type: 'error', message: String(message) }); }
  window.addEventListener('error', (e) => reportError(e.message));
  window.addEventListener('unhandledrejection', (e) => reportError(e.reason));

  if (!gl) {
    statusEl.textContent = 'this browser has no WebGL2';
    return;
  }
  let speakersDirty = false;
  const voice = window.HoloportVoice({ send, reportError, params,
    onChange: () => { speakersDirty = true; schedule(); } });

  // ---- matrices (column-major, as GL wants) -------------------------------------------------
  function perspective(fovy, aspect, near, far) {
    const f = 1 / Math.tan(fovy / 2), nf = 1 / (near - far);
    return new Float32Array([f / aspect, 0, 0, 0, 0, f, 0, 0, 0, 0, (far + near) * nf, -1, 0, 0, 2 * far * near * nf, 0]);
  }
  function lookAt(eye, target, up) {
    let zx = eye[0] - target[0], zy = eye[1] - target[1], zz = eye[2] - target[2];
    let l = Math.hypot(zx, zy, zz); zx /= l; zy /= l; zz /= l;
    let xx = up[1] * zz - up[2] * zy, xy = up[2] * zx - up[0] * zz, xz = up[0] * zy - up[1] * zx;
    l = Math.hypot(xx, xy, xz); xx /= l; xy /= l; xz /= l;
    const yx = zy * xz - zz * xy, yy = zz * xx - zx * xz, yz = zx * xy - zy * xx;
    return new Float32Array([xx, yx, zx, 0, xy, yy, zy, 0, xz, yz, zz, 0,
      -(xx * eye[0] + xy * eye[1] + xz * eye[2]), -(yx * eye[0] + yy * eye[1] + yz * eye[2]),
      -(zx * eye[0] + zy * eye[1] + zz * eye[2]), 1]);
  }

  // ---- shaders ------------------------------------------------------------------------------
  function program(vs, fs) {
    const p = gl.createProgram();
    for (const [type, src] of [[gl.VERTEX_SHADER, vs], [gl.FRAGMENT_SHADER, fs]]) {
      const s = gl.createShader(type);
      gl.shaderSource(s, src);
      gl.compileShader(s);
      if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
      gl.attachShader(p, s);
    }
    gl.linkProgram(p);
    if (!gl.getProgramParameter(p, gl.LINK_STATUS)) throw new Error(gl.getProgramInfoLog(p));
    return p;
  }
  const FRAG = `#version 300 es
    precision mediump float;
    in vec3 vColor; out vec4 outColor;
    void main() { outColor = vec4(vColor, 1.0); }`;
  // Points: positions arrive as int16 millimetres, colours as normalised uint8.
  const pointProg = program(`#version 300 es
    layout(location = 0) in vec3 aPos;
    layout(location = 1) in vec3 aColor;
    uniform mat4 uView, uProj;
    uniform float uSize;  // point side in metres x focal length in pixels
    out vec3 vColor;
    void main() {
      vec4 v = uView * vec4(aPos * 0.001, 1.0);
      gl_Position = uProj * v;
      gl_PointSize = clamp(uSize / max(-v.z, 0.05), 1.0, 32.0);
      vColor = aColor;
    }`, FRAG);
  const roomProg = program(`#version 300 es
    layout(location = 0) in vec3 aPos;
    layout(location = 1) in vec3 aColor;
    uniform mat4 uView, uProj;
    out vec3 vColor;
    void main() { gl_Position = uProj * uView * vec4(aPos, 1.0); vColor = aColor; }`, FRAG);
  const pointU = { view: gl.getUniformLocation(pointProg, 'uView'), proj: gl.getUniformLocation(pointProg, 'uProj'),
    size: gl.getUniformLocation(pointProg, 'uSize') };
  const roomU = { view: gl.getUniformLocation(roomProg, 'uView'), proj: gl.getUniformLocation(roomProg, 'uProj') };

  // ---- point buffers, reused: grown when needed, refilled with bufferSubData -----------------
  const pointVao = gl.createVertexArray();
  const posBuf = gl.createBuffer(), colBuf = gl.createBuffer();
  gl.bindVertexArray(pointVao);
  gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
  gl.enableVertexAttribArray(0);
  gl.vertexAttribPointer(0, 3, gl.SHORT, false, 0, 0);
  gl.bindBuffer(gl.ARRAY_BUFFER, colBuf);
  gl.enableVertexAttribArray(1);
  gl.vertexAttribPointer(1, 3, gl.UNSIGNED_BYTE, true, 0, 0);
  gl.bindVertexArray(null);
  let capacity = 0, pointCount = 0;

  function upload(frame) {
    if (frame.n > capacity) {
      capacity = Math.ceil(frame.n * 1.25);
      gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
      gl.bufferData(gl.ARRAY_BUFFER, capacity * 6, gl.DYNAMIC_DRAW);
      gl.bindBuffer(gl.ARRAY_BUFFER, colBuf);
      gl.bufferData(gl.ARRAY_BUFFER, capacity * 3, gl.DYNAMIC_DRAW);
    }
    if (frame.n > 0) {
      gl.bindBuffer(gl.ARRAY_BUFFER, posBuf);
      gl.bufferSubData(gl.ARRAY_BUFFER, 0, frame.pos);
      gl.bindBuffer(gl.ARRAY_BUFFER, colBuf);
      gl.bufferSubData(gl.ARRAY_BUFFER, 0, frame.col);
    }
    pointCount = frame.n;
  }

  // ---- the room: floor, seats, table (the same colours as render/_kernels.py) ----------------
  const roomVao = gl.createVertexArray(), roomBuf = gl.createBuffer();
  let roomCount = 0, pointSize = 0.006, room = null;

  function buildRoom(desc) {
    const v = [];
    const tri = (a, b, c, col) => { for (const p of [a, b, c]) v.push(p[0], p[1], p[2], col[0] / 255, col[1] / 255, col[2] / 255); };
    const quad = (a, b, c, d, col) => { tri(a, b, c, col); tri(a, c, d, col); };
    if (desc) {
      const R = Math.ceil(desc.seat_distance + 8);
      for (let x = -R; x < R; x++) {
        for (let z = -R; z < R; z++) {
          const b = ((x + z) & 1) ? 92 : 104;
          quad([x, 0, z], [x, 0, z + 1], [x + 1, 0, z + 1], [x + 1, 0, z], [b, b * 0.97, b * 0.92]);
        }
      }
      const seg = 48, ring = (r, y) => Array.from({ length: seg + 1 }, (_, i) => {
        const a = 2 * Math.PI * i / seg; return [r * Math.cos(a), y, r * Math.sin(a)];
      });
      for (const pose of desc.seat_poses) {
        const cx = pose[3], cz = pose[11];
        const inner = ring(0.30, 0.003), outer = ring(0.36, 0.003);
        for (let i = 0; i < seg; i++) {
          const o = (p) => [p[0] + cx, p[1], p[2] + cz];
          quad(o(inner[i]), o(outer[i]), o(outer[i + 1]), o(inner[i + 1]), [70, 130, 190]);
        }
      }
      const h = desc.table_height, r = desc.table_radius;
      const top = ring(r, h), low = ring(r, h - 0.04), legTop = ring(0.07, h), legLow = ring(0.07, 0);
      for (let i = 0; i < seg; i++) {
        tri([0, h, 0], top[i + 1], top[i], [150, 105, 65]);
        quad(top[i], top[i + 1], low[i + 1], low[i], [110, 75, 45]);
        quad(legTop[i], legTop[i + 1], legLow[i + 1], legLow[i], [60, 60, 66]);
      }
    }
    gl.bindVertexArray(roomVao);
    gl.bindBuffer(gl.ARRAY_BUFFER, roomBuf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(v), gl.STATIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 3, gl.FLOAT, false, 24, 0);
    gl.enableVertexAttribArray(1);
    gl.vertexAttribPointer(1, 3, gl.FLOAT, false, 24, 12);
    gl.bindVertexArray(null);
    roomCount = v.length / 6;
  }

  // ---- who is speaking: a glowing ring on the floor round them and a halo over their head ----
  const speakVao = gl.createVertexArray(), speakBuf = gl.createBuffer();
  let speakCount = 0;

  function buildSpeakers(list) {
    const v = [], seg = 40, col = [1.0, 0.82, 0.25];
    const ring = (cx, y, cz, r0, r1) => {
      for (let i = 0; i < seg; i++) {
        const a = 2 * Math.PI * i / seg, b = 2 * Math.PI * (i + 1) / seg;
        const p = (r, t) => [cx + r * Math.cos(t), y, cz + r * Math.sin(t)];
        for (const q of [p(r0, a), p(r1, a), p(r1, b), p(r0, a), p(r1, b), p(r0, b)]) v.push(...q, ...col);
      }
    };
    for (const { position: [x, y, z] } of list) {
      ring(x, 0.006, z, 0.38, 0.46);
      ring(x, y + 0.30, z, 0.10, 0.14);
    }
    gl.bindVertexArray(speakVao);
    gl.bindBuffer(gl.ARRAY_BUFFER, speakBuf);
    gl.bufferData(gl.ARRAY_BUFFER, new Float32Array(v), gl.DYNAMIC_DRAW);
    gl.enableVertexAttribArray(0);
    gl.vertexAttribPointer(0, 3, gl.FLOAT, false, 24, 0);
    gl.enableVertexAttribArray(1);
    gl.vertexAttribPointer(1, 3, gl.FLOAT, false, 24, 12);
    gl.bindVertexArray(null);
    speakCount = v.length / 6;
  }

  // The listener stands where the eye is, facing where it looks (row 1 and -row 2 of the view).
  function listenFrom(eye, view) {
    voice.setListener(eye, [-view[2], -view[6], -view[10]], [view[1], view[5], view[9]]);
  }

  // ---- software renderers: splat the points in JavaScript, composite with one quad ----------
  // SwiftShader and llvmpipe pay about a microsecond of set-up per GL point, so 200k points
  // cost 150-250 ms a frame as gl.POINTS. A z-buffered splat loop over the typed arrays costs
  // a few ns a point; its colour and depth go up as two textures and one full-screen pass
  // writes them with gl_FragDepth, so the GL-drawn room still occludes and is occluded.
  const splatProg = program(`#version 300 es
    void main() {
      vec2 p = vec2(float((gl_VertexID & 1) << 2) - 1.0, float((gl_VertexID & 2) << 1) - 1.0);
      gl_Position = vec4(p, 0.0, 1.0);
    }`, `#version 300 es
    precision highp float;
    uniform sampler2D uColor;
    uniform highp sampler2D uDepth;
    out vec4 outColor;
    void main() {
      ivec2 p = ivec2(gl_FragCoord.xy);
      vec4 c = texelFetch(uColor, p, 0);
      if (c.a == 0.0) discard;
      gl_FragDepth = texelFetch(uDepth, p, 0).r;
      outColor = vec4(c.rgb, 1.0);
    }`);
  const splatU = { color: gl.getUniformLocation(splatProg, 'uColor'), depth: gl.getUniformLocation(splatProg, 'uDepth') };
  const splatVao = gl.createVertexArray();
  const splat = { w: 0, h: 0, color: null, color8: null, depth: null, colorTex: null, depthTex: null,
    box: [0, 0, 0, 0], frame: null };

  function splatTextures(w, h) {
    if (splat.w === w && splat.h === h) return;
    splat.w = w; splat.h = h;
    splat.color = new Uint32Array(w * h);
    splat.color8 = new Uint8Array(splat.color.buffer);
    splat.depth = new Float32Array(w * h);
    for (const name of ['colorTex', 'depthTex']) {
      if (splat[name]) gl.deleteTexture(splat[name]);
      const t = gl.createTexture();
      gl.bindTexture(gl.TEXTURE_2D, t);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.texStorage2D(gl.TEXTURE_2D, 1, name === 'colorTex' ? gl.RGBA8 : gl.R32F, w, h);
      splat[name] = t;
    }
  }

  // view and proj are column-major; positions are int16 millimetres; depth is GL window depth.
  function splatPoints(frame, view, proj, w, h) {
    splatTextures(w, h);
    const color = splat.color, depth = splat.depth;
    color.fill(0);
    depth.fill(1);
    const m = new Float32Array(16);
    for (let c = 0; c < 4; c++) {
      for (let r = 0; r < 4; r++) {
        let v = 0;
        for (let k = 0; k < 4; k++) v += proj[k * 4 + r] * view[c * 4 + k];
        m[c * 4 + r] = c < 3 ? v * 0.001 : v; // fold millimetres -> metres into the matrix
      }
    }
    const m0 = m[0], m1 = m[1], m2 = m[2], m3 = m[3], m4 = m[4], m5 = m[5], m6 = m[6], m7 = m[7];
    const m8 = m[8], m9 = m[9], m10 = m[10], m11 = m[11], m12 = m[12], m13 = m[13], m14 = m[14], m15 = m[15];
    const hw = w / 2, hh = h / 2, size = pointSize * proj[5] * hh;
    const pos = frame.pos, col = frame.col, n = frame.n;
    let x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      const x = pos[j], y = pos[j + 1], z = pos[j + 2];
      const cw = m3 * x + m7 * y + m11 * z + m15;
      if (cw < 0.05) continue;
      const inv = 1 / cw;
      const fx = (m0 * x + m4 * y + m8 * z + m12) * inv * hw + hw;
      const fy = (m1 * x + m5 * y + m9 * z + m13) * inv * hh + hh;
      if (!(fx >= 0 && fx < w && fy >= 0 && fy < h)) continue;
      const d = ((m2 * x + m6 * y + m10 * z + m14) * inv) * 0.5 + 0.5;
      const rgba = (0xff000000 | (col[j + 2] << 16) | (col[j + 1] << 8) | col[j]) >>> 0;
      const s = size * inv;
      let px = fx | 0, py = fy | 0;
      if (s < 1.5) {
        const o = py * w + px;
        if (d < depth[o]) { depth[o] = d; color[o] = rgba; }
      } else {
        const k = s > 8 ? 8 : (s + 0.5) | 0, half = k >> 1;
        px -= half; py -= half;
        const xa = px < 0 ? 0 : px, ya = py < 0 ? 0 : py;
        const xb = px + k > w ? w : px + k, yb = py + k > h ? h : py + k;
        for (let yy = ya; yy < yb; yy++) {
          for (let o = yy * w + xa, e = yy * w + xb; o < e; o++) {
            if (d < depth[o]) { depth[o] = d; color[o] = rgba; }
          }
        }
      }
      if (px < x0) x0 = px;
      if (py < y0) y0 = py;
      if (px > x1) x1 = px;
      if (py > y1) y1 = py;
    }
    // Upload and composite only the rows that hold points.
    x0 = Math.max(0, x0); y0 = Math.max(0, y0); x1 = Math.min(w - 1, x1 + 8); y1 = Math.min(h - 1, y1 + 8);
    splat.box = x1 >= x0 && y1 >= y0 ? [x0, y0, x1 - x0 + 1, y1 - y0 + 1] : [0, 0, 0, 0];
    const [, by, , bh] = splat.box;
    if (bh > 0) {
      gl.bindTexture(gl.TEXTURE_2D, splat.colorTex);
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, by, w, bh, gl.RGBA, gl.UNSIGNED_BYTE, splat.color8, by * w * 4);
      gl.bindTexture(gl.TEXTURE_2D, splat.depthTex);
      gl.texSubImage2D(gl.TEXTURE_2D, 0, 0, by, w, bh, gl.RED, gl.FLOAT, depth, by * w);
    }
  }

  function compositeSplats() {
    const [bx, by, bw, bh] = splat.box;
    if (bw <= 0 || bh <= 0) return;
    gl.enable(gl.SCISSOR_TEST);
    gl.scissor(bx, by, bw, bh);
    gl.useProgram(splatProg);
    gl.activeTexture(gl.TEXTURE0);
    gl.bindTexture(gl.TEXTURE_2D, splat.colorTex);
    gl.uniform1i(splatU.color, 0);
    gl.activeTexture(gl.TEXTURE1);
    gl.bindTexture(gl.TEXTURE_2D, splat.depthTex);
    gl.uniform1i(splatU.depth, 1);
    gl.bindVertexArray(splatVao);
    gl.drawArrays(gl.TRIANGLES, 0, 3);
    gl.disable(gl.SCISSOR_TEST);
    gl.activeTexture(gl.TEXTURE0);
  }

  // ---- drawing ------------------------------------------------------------------------------
  gl.enable(gl.DEPTH_TEST);
  gl.clearColor(40 / 255, 48 / 255, 74 / 255, 1);

  function drawScene(view, proj, viewportHeight, withPoints) {
    if (speakersDirty) { speakersDirty = false; buildSpeakers(voice.speakers()); }
    if (roomCount || speakCount) {
      gl.useProgram(roomProg);
      gl.uniformMatrix4fv(roomU.view, false, view);
      gl.uniformMatrix4fv(roomU.proj, false, proj);
      if (roomCount) {
        gl.bindVertexArray(roomVao);
        gl.drawArrays(gl.TRIANGLES, 0, roomCount);
      }
      if (speakCount) {
        gl.bindVertexArray(speakVao);
        gl.drawArrays(gl.TRIANGLES, 0, speakCount);
      }
    }
    if (withPoints && pointCount) {
      gl.useProgram(pointProg);
      gl.uniformMatrix4fv(pointU.view, false, view);
      gl.uniformMatrix4fv(pointU.proj, false, proj);
      gl.uniform1f(pointU.size, pointSize * proj[5] * viewportHeight / 2);
      gl.bindVertexArray(pointVao);
      gl.drawArrays(gl.POINTS, 0, pointCount);
    }
    gl.bindVertexArray(null);
  }

  // Orbit camera around the table; the defaults match render.Room.orbit_camera(0).
  const cam = { yaw: num('yaw', 0) * Math.PI / 180, pitch: num('pitch', 24) * Math.PI / 180,
    dist: num('dist', 3.94), fovy: num('fov', 45) * Math.PI / 180, target: [0, num('target_y', 0.8), 0] };

  // ?size=WxH renders at a fixed resolution whatever the window (benchmarks, screenshots).
  const fixedSize = /^(\d+)x(\d+)$/.exec(params.get('size') || '');
  if (fixedSize) canvas.style.objectFit = 'contain';
  function resize() {
    const dpr = window.devicePixelRatio || 1;
    const w = fixedSize ? +fixedSize[1] : Math.max(1, Math.round(canvas.clientWidth * dpr));
    const h = fixedSize ? +fixedSize[2] : Math.max(1, Math.round(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  }

  let pending = null; // the newest frame not yet drawn
  let lastFrame = null; // the frame on screen (the splat path redraws it when the camera moves)
  let rafQueued = false;
  function schedule() {
    if (!rafQueued && !xrSession) { rafQueued = true; requestAnimationFrame(draw); }
  }

  function consumePending() {
    if (!pending) return;
    const frame = pending;
    pending = null;
    lastFrame = frame;
    if (drawMode === 'points' || xrSession) upload(frame);
    stats.frames++;
    stats.points = frame.n;
    const now = performance.now();
    frameTimes.push(now);
    while (frameTimes.length && frameTimes[0] < now - 2000) frameTimes.shift();
    send(`{"type":"ack","seq":${frame.seq}}`);
  }

  function draw() {
    const started = performance.now();
    rafQueued = false;
    resize();
    consumePending();
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    gl.viewport(0, 0, canvas.width, canvas.height);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    const cp = Math.cos(cam.pitch);
    const eye = [cam.target[0] + cam.dist * Math.sin(cam.yaw) * cp, cam.target[1] + cam.dist * Math.sin(cam.pitch),
      cam.target[2] + cam.dist * Math.cos(cam.yaw) * cp];
    const view = lookAt(eye, cam.target, [0, 1, 0]);
    const proj = perspective(cam.fovy, canvas.width / canvas.height, 0.05, 100);
    listenFrom(eye, view);
    if (drawMode === 'splat') {
      if (lastFrame) splatPoints(lastFrame, view, proj, canvas.width, canvas.height);
      else splat.box = [0, 0, 0, 0];
      drawScene(view, proj, canvas.height, false);
      compositeSplats();
    } else {
      drawScene(view, proj, canvas.height, true);
    }
    stats.draws++;
    drawTimes.push(performance.now() - started);
    if (drawTimes.length > 30) drawTimes.shift();
  }

  // ---- the stream ---------------------------------------------------------------------------
  function onFrame(buf) {
    if (buf.byteLength < 24) return reportError('short frame');
    const dv = new DataView(buf);
    if (dv.getUint32(0, true) !== MAGIC) return reportError('bad frame magic');
    const seq = dv.getUint32(4, true), n = dv.getUint32(8, true), k = dv.getUint16(12, true);
    let head = 24 + 4 * k;
    head += (4 - (head % 4)) % 4;
    if (buf.byteLength !== head + 9 * n) return reportError('frame length does not match its header');
    if (pending) stats.replaced++;
    pending = { seq, n, pos: new Int16Array(buf, head, 3 * n), col: new Uint8Array(buf, head + 6 * n, 3 * n) };
    stats.received++;
    schedule();
  }

  function snapshot(id) {
    // Draw and encode in the same task, so the drawing buffer still holds this frame.
    draw();
    canvas.toBlob((blob) => {
      if (!blob) return reportError('snapshot failed');
      blob.arrayBuffer().then((png) => {
        const out = new Uint8Array(4 + png.byteLength);
        new DataView(out.buffer).setUint32(0, id >>> 0, true);
        out.set(new Uint8Array(png), 4);
        if (ws && ws.readyState === WebSocket.OPEN) ws.send(out);
      });
    }, 'image/png');
  }

  function onControl(text) {
    let msg;
    try { msg = JSON.parse(text); } catch (e) { return reportError('bad control message'); }
    if (msg.type === 'room') {
      room = msg.room;
      if (typeof msg.point_size === 'number' && msg.point_size > 0) pointSize = msg.point_size;
      buildRoom(room);
      schedule();
    } else if (msg.type === 'snapshot') {
      snapshot(msg.id);
    } else if (!voice.onControl(msg)) {
      reportError(`unknown control message ${String(msg.type).slice(0, 40)}`);
    }
  }

  function onBinary(buf) {
    if (buf.byteLength >= 4 && new DataView(buf).getUint32(0, true) === voice.MAGIC) voice.onAudio(buf);
    else onFrame(buf);
  }

  function hello() {
    send({ type: 'hello', gl: rendererName, draw: drawMode, ua: navigator.userAgent, xr: xrSupported,
      vr_button: !vrButton.hidden, width: canvas.width, height: canvas.height, query: location.search.slice(0, 200) });
  }

  function connect() {
    const url = params.get('ws') || `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/stream`;
    ws = new WebSocket(url);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => { resize(); hello(); };
    ws.onmessage = (e) => (typeof e.data === 'string' ? onControl(e.data) : onBinary(e.data));
    ws.onclose = () => { ws = null; statusEl.textContent = 'disconnected, retrying…'; setTimeout(connect, 1000); };
  }

  setInterval(() => {
    const now = performance.now();
    while (frameTimes.length && frameTimes[0] < now - 2000) frameTimes.shift();
    const span = frameTimes.length ? Math.min(2000, now - frameTimes[0]) : 2000;
    const fps = frameTimes.length > 1 ? (frameTimes.length - 1) * 1000 / Math.max(span, 1) : 0;
    send({ type: 'stats', frames: stats.frames, draws: stats.draws, points: stats.points, fps,
      received: stats.received, replaced: stats.replaced, t: now,
      draw_ms: drawTimes.length ? drawTimes.reduce((a, b) => a + b, 0) / drawTimes.length : 0, width: canvas.width, height: canvas.height,
      audio: voice.stats() });
    if (ws) statusEl.textContent = `${stats.points.toLocaleString()} points · ${fps.toFixed(1)} fps`;
  }, 500);

  // ---- orbit and zoom: mouse, wheel, touch (one finger orbits, two pinch) --------------------
  const pointers = new Map();
  canvas.addEventListener('pointerdown', (e) => {
    canvas.setPointerCapture(e.pointerId);
    pointers.set(e.pointerId, [e.clientX, e.clientY]);
  });
  canvas.addEventListener('pointermove', (e) => {
    const last = pointers.get(e.pointerId);
    if (!last) return;
    if (pointers.size === 1) {
      cam.yaw -= (e.clientX - last[0]) * 0.006;
      cam.pitch = Math.min(1.5, Math.max(-0.2, cam.pitch + (e.clientY - last[1]) * 0.006));
    } else if (pointers.size === 2) {
      const other = [...pointers.entries()].find(([id]) => id !== e.pointerId)[1];
      const before = Math.hypot(last[0] - other[0], last[1] - other[1]);
      const after = Math.hypot(e.clientX - other[0], e.clientY - other[1]);
      if (before > 0 && after > 0) cam.dist = Math.min(30, Math.max(0.3, cam.dist * before / after));
    }
    pointers.set(e.pointerId, [e.clientX, e.clientY]);
    schedule();
  });
  for (const type of ['pointerup', 'pointercancel']) canvas.addEventListener(type, (e) => pointers.delete(e.pointerId));
  canvas.addEventListener('wheel', (e) => {
    e.preventDefault();
    cam.dist = Math.min(30, Math.max(0.3, cam.dist * Math.exp(e.deltaY * 0.001)));
    schedule();
  }, { passive: false });
  window.addEventListener('resize', schedule);

  // ---- WebXR: the same points per eye, standing between two seats (or at ?seat=N) -----------
  function xrPlacement() {
    const d = room ? room.seat_distance : 1.15, seats = room ? room.seats : 3;
    let angle = Math.PI / seats, dist = d + 0.6;
    if (params.has('seat') && room) { angle = 2 * Math.PI * (num('seat', 0) % seats) / seats; dist = d; }
    // The user faces -z in their own space; yaw by `angle` to face the table from there.
    const q = { x: 0, y: Math.sin(angle / 2), z: 0, w: Math.cos(angle / 2) };
    return new XRRigidTransform({ x: dist * Math.sin(angle), y: 0, z: dist * Math.cos(angle) }, q).inverse;
  }

  async function enterVR() {
    if (xrSession) { xrSession.end(); return; }
    const session = await navigator.xr.requestSession('immersive-vr', { optionalFeatures: ['local-floor'] });
    await gl.makeXRCompatible();
    session.updateRenderState({ baseLayer: new XRWebGLLayer(session, gl, { antialias: false }) });
    let space;
    try { space = await session.requestReferenceSpace('local-floor'); } catch (e) {
      space = (await session.requestReferenceSpace('local')).getOffsetReferenceSpace(
        new XRRigidTransform({ x: 0, y: -1.6, z: 0 }));
    }
    space = space.getOffsetReferenceSpace(xrPlacement());
    xrSession = session;
    if (lastFrame) upload(lastFrame); // a headset has a GPU: always gl.POINTS in VR
    vrButton.textContent = 'Exit VR';
    session.addEventListener('end', () => { xrSession = null; vrButton.textContent = 'Enter VR'; schedule(); });
    const onXRFrame = (t, frame) => {
      session.requestAnimationFrame(onXRFrame);
      const pose = frame.getViewerPose(space);
      if (!pose) return;
      const layer = session.renderState.baseLayer;
      const m = pose.transform.matrix; // the head, in room coordinates: the ears follow it
      voice.setListener([m[12], m[13], m[14]], [-m[8], -m[9], -m[10]], [m[4], m[5], m[6]]);
      consumePending();
      gl.bindFramebuffer(gl.FRAMEBUFFER, layer.framebuffer);
      gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
      for (const view of pose.views) {
        const vp = layer.getViewport(view);
        gl.viewport(vp.x, vp.y, vp.width, vp.height);
        drawScene(view.transform.inverse.matrix, view.projectionMatrix, vp.height, true);
      }
      stats.draws++;
    };
    session.requestAnimationFrame(onXRFrame);
  }
  vrButton.addEventListener('click', () => { voice.resume(); enterVR().catch((e) => reportError(`WebXR: ${e}`)); });

  if (navigator.xr && navigator.xr.isSessionSupported) {
    navigator.xr.isSessionSupported('immersive-vr').then((ok) => {
      xrSupported = !!ok;
      vrButton.hidden = !ok;
      hello();
    }).catch(() => {});
  }

  connect();
  schedule();
})();
