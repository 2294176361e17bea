# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv if it
# is missing and installs the project (with its test extras) into it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DEMO := runs/demo
CKPT := $(DEMO)/subspace.safetensors
# Half the quick recipe's 30 epochs: the whole demo (train, evaluate, three validated exports)
# fits in about 8 minutes on two cores (the accuracy it reaches is in the README).
DEMO_EPOCHS ?= 15

.PHONY: setup setup-apps demo test bench clean

# The venv (created when missing) with the project and the extras in $(1) installed.
define install
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[$(1)]'
endef

$(BIN)/.lcs-installed: pyproject.toml
	$(call install,test)
	touch $@

setup: $(BIN)/.lcs-installed

# The test suite also checks the executorch target, an optional extra (large: torchao and
# tokenizers come with it), so only `make test` installs it and `make demo` stays lean. One
# pip run installs everything (a second run only to add the extras cost a fresh machine 10 s
# of resolving); what it installs includes the demo's, hence both stamps.
TEST_EXTRAS := test,executorch,host
$(BIN)/.lcs-test-installed: pyproject.toml
	$(call install,$(TEST_EXTRAS))
	touch $@ $(BIN)/.lcs-installed

WEB := sample_apps/web

# The web app's npm packages (onnxruntime-web, ajv-dist, playwright-core), again whenever the
# lock file changes; npm ci writes node_modules/.package-lock.json itself.
$(WEB)/node_modules/.package-lock.json: $(WEB)/package-lock.json
	npm ci --prefix $(WEB) --no-audit --no-fund
	touch $@

# What the sample apps' tests need, each installed only when missing: the npm packages and
# Debian's chromium (browser test), Debian's kotlinc, JDK 17, Gson and JUnit 4 (lcs-core).
setup-apps: $(WEB)/node_modules/.package-lock.json
	command -v chromium >/dev/null 2>&1 || \
	    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	sh sample_apps/android/lcs-core/install-deps.sh

# Train the default subspace (resuming if a previous demo was interrupted), evaluate it,
# then export and validate the bundles.
demo: setup $(WEB)/node_modules/.package-lock.json
	if [ -f $(CKPT) ]; then $(BIN)/lcs-train --out $(CKPT) --epochs $(DEMO_EPOCHS) --resume --no-evaluate; \
	else $(BIN)/lcs-train --out $(CKPT) --epochs $(DEMO_EPOCHS) --no-evaluate; fi
	$(BIN)/lcs-train eval $(CKPT) --alphas 0,0.25,0.5,0.75,0.9
	$(BIN)/lcs-export onnx $(CKPT) --levels 0.0,0.5,0.9 --dynamic-alpha -o $(DEMO)/onnx --force
	$(BIN)/lcs-export torchscript-lite $(CKPT) --levels 0.0,0.5,0.9 --dynamic-alpha -o $(DEMO)/torchscript-lite --force
	$(BIN)/lcs-export coreml $(CKPT) --levels 0.0,0.5,0.9 --dynamic-alpha -o $(DEMO)/coreml --force
	@echo "The web sample app with the ONNX bundle (then open the printed URL):"
	@echo "  $(BIN)/lcs-export app $(DEMO)/onnx --platform web -o $(DEMO)/web-app --force --serve"

test: $(BIN)/.lcs-test-installed setup-apps
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python bench/train_step.py
	$(BIN)/python bench/export.py
	$(BIN)/python bench/export_time.py

clean:
	rm -rf $(VENV) runs .pytest_cache
