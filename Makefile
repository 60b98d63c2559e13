# Two commands set up a fresh Debian/Ubuntu machine: `make demo` and `make test`.
# Both create or refresh the project's own virtual environment (.venv) from pyproject.toml.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# numba caches a compiled kernel beside its source and checks only that file's time stamp,
# so a kernel that inlines another module's kernel would keep a stale copy: drop every
# cached kernel whenever any kernel module changes.
KERNELS := $(wildcard capture/_*.py codec/_*.py render/_*.py)
KCACHE  := $(VENV)/.kernels

.PHONY: demo test lint bench bench-unseen tmc3 system-deps test-deps voice-deps clean

demo: $(STAMP) $(KCACHE) voice-deps
	$(BIN)/holoport demo

test: $(STAMP) $(KCACHE) test-deps voice-deps
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check .

# The codec figures of the README; with tmc3 built (make tmc3) G-PCC runs in the same run.
bench: $(STAMP) $(KCACHE)
	$(BIN)/holoport bench codec --repeats 9 --json docs/bench/codec.json --markdown docs/bench/codec.md \
	  --plot docs/bench/codec.png $(if $(wildcard $(TMC3)),--gpcc $(TMC3))

# The same on frames of other sensors the codec was not tuned on (benchmarks/grid_frames.py):
# Kinect v1, a rendered RGB-D frame, TUM; at 9 and 10 bits. Against tmc3 when built.
UNSEEN ?= $(HOME)/.cache/holoport/unseen-frames
bench-unseen: $(STAMP) $(KCACHE)
	rm -rf $(UNSEEN)
	$(BIN)/python -m benchmarks.grid_frames --out $(UNSEEN) --bits 9
	$(BIN)/python -m benchmarks.grid_frames --out $(UNSEEN) --bits 10
	$(BIN)/holoport bench codec --data $(UNSEEN) --no-draco --repeats 3 --json docs/bench/codec-unseen.json \
	  --markdown docs/bench/codec-unseen.md $(if $(wildcard $(TMC3)),--gpcc $(TMC3))

# MPEG G-PCC's reference encoder, to run beside ours: holoport bench codec --gpcc $(TMC3).
# Built from its public source outside the repository; never committed (docs/codec.md).
# Needs git, cmake and a C++ compiler (Debian: apt-get install git cmake g++).
TMC13_DIR ?= $(HOME)/.cache/holoport/tmc13
TMC13_TAG ?= release-v23.0-rc2
TMC3      := $(TMC13_DIR)/build/tmc3/tmc3
tmc3:
	@test -f $(TMC13_DIR)/CMakeLists.txt || git clone --quiet --depth 1 --branch $(TMC13_TAG) \
	  https://github.com/MPEGGroup/mpeg-pcc-tmc13.git $(TMC13_DIR)
	cmake -S $(TMC13_DIR) -B $(TMC13_DIR)/build -DCMAKE_BUILD_TYPE=Release >/dev/null
	$(MAKE) --no-print-directory -C $(TMC13_DIR)/build -j2 tmc3 >/dev/null
	@echo "built $(TMC3); run: $(BIN)/holoport bench codec --gpcc $(TMC3)"

$(STAMP): pyproject.toml
	@$(MAKE) --no-print-directory system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@$(BIN)/python -m pip install --quiet -e '.[quality]' 2>/dev/null || echo "PESQ (pip install pesq) did not build: it needs a C compiler and Python's headers (Debian: build-essential python3-dev); voice quality tests and figures are skipped without it."
	@touch $(STAMP)

$(KCACHE): $(KERNELS) | $(STAMP)
	@find capture codec render -name '*.nb[ic]' -delete
	@touch $@

# System libraries the Python packages need: Open3D needs libusb-1.0; venv needs ensurepip.
# Installed with apt when we are root (or have passwordless sudo); otherwise named once.
system-deps:
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 10))' || \
	  { echo "Holoport needs Python 3.10 or newer; '$(PYTHON)' is older. Run: make PYTHON=python3.11 ..."; exit 1; }
	@missing=""; \
	  $(PYTHON) -c 'import ctypes.util, sys; sys.exit(ctypes.util.find_library("usb-1.0") is None)' || missing=" libusb-1.0-0"; \
	  test -x $(BIN)/python || $(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || missing="$$missing python3-venv"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then SUDO=""; \
	    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then SUDO="sudo"; \
	    else echo "Holoport needs these system packages:$$missing. Install them (Debian/Ubuntu: sudo apt-get install$$missing) and run make again."; exit 1; fi; \
	    echo "Installing system packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	  fi

# What only the tests need: headless Chromium for the browser viewer, Xvfb and xdotool for
# the desktop window, Draco's command-line tools for the codec benchmark's peer, Redis for
# the hub cluster tests. Installed with apt when we are root (or have passwordless sudo);
# otherwise the tests that need them are skipped, with the reason.
test-deps:
	@missing=""; \
	  command -v chromium >/dev/null || command -v chromium-browser >/dev/null || missing=" chromium"; \
	  command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	  command -v xdotool >/dev/null || missing="$$missing xdotool"; \
	  command -v draco_encoder >/dev/null || missing="$$missing draco"; \
	  command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then SUDO=""; \
	    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then SUDO="sudo"; \
	    else echo "Tests of the browser viewer, the desktop window and Draco's own tools need:$$missing (Debian/Ubuntu: sudo apt-get install$$missing); they will be skipped."; exit 0; fi; \
	    echo "Installing test packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	      || echo "Could not install$$missing; the tests that need them will be skipped."; \
	  fi

# Voice: espeak-ng speaks the demo's participants (without it they play the shared speech
# clips) and PortAudio reaches microphones and speakers (without it a participant joins
# without them, and says so). Installed like test-deps: with apt when we may, else named.
voice-deps:
	@missing=""; \
	  command -v espeak-ng >/dev/null || missing=" espeak-ng"; \
	  { /sbin/ldconfig -p 2>/dev/null | grep -q libportaudio.so.2; } || missing="$$missing libportaudio2"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then SUDO=""; \
	    elif command -v sudo >/dev/null && sudo -n true 2>/dev/null && command -v apt-get >/dev/null; then SUDO="sudo"; \
	    else echo "Voice works best with:$$missing (Debian/Ubuntu: sudo apt-get install$$missing); without them the demo plays recorded speech and there are no audio devices."; exit 0; fi; \
	    echo "Installing voice packages:$$missing"; \
	    $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null \
	      || echo "Could not install$$missing; the demo plays recorded speech instead."; \
	  fi

clean:
	rm -rf $(VENV) holoport-demo .pytest_cache
