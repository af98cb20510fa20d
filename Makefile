# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if missing
# and installs what it needs (torch first, pinned to the local CPU wheel; never torchvision/timm).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.mgv2-installed

.PHONY: demo test test-all lint bench clean app browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,app]'
	touch $(STAMP)

# The bundled demo model on an unseen synthetic scene ([detection] red balloon -> demo_out/), then
# the app with the same model.  `make demo APP=0`: no app, print how to open it.
APP ?= 1
demo: $(STAMP)
	$(BIN)/python -m mgv2.demo --out demo_out $(if $(filter 0,$(APP)),--no-app,--app)

# Debian's Chromium for the app's browser test (never `playwright install`); skipped with a note
# where it cannot be installed (not root, no apt), and then the browser test says why it skipped.
browser:
	@test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "note: Chromium could not be installed; the browser test will be skipped"

app: $(STAMP)
	$(BIN)/python -m streamlit run app/main.py

test: $(STAMP) browser
	$(BIN)/python -m pytest -q

test-all: $(STAMP) browser
	$(BIN)/python -m pytest -q -m ''

lint: $(STAMP)
	$(BIN)/ruff check mgv2 tasks eval tests bench

bench: $(STAMP)
	$(BIN)/python bench/generate.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
