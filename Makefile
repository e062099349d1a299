# `make demo`: train on the embedded default data and show predictions.  `make test`: the test suite.
# `make bench`: the recipe (5 seeds, ~5 min each on a 2-core CPU) against TF-IDF + LR and fastText on the
# embedded default (scripts/benchmark.py; runs kept and reused in outputs/benchmark).
# Both create .venv and install what they need; torch is pinned to the CPU build on this machine.
# --no-compile: pip would byte-compile every module of torch, transformers... at install; Python compiles
# the few that are imported on first use.
# The demo replaces its own previous run in $(DEMO_DIR) (--overwrite_output_dir). It trains the shipped config
# without adversarial training: on the embedded reviews, next to the model's TF-IDF branch, that pass measured no
# gain in test accuracy over 5 seeds (0.8631 vs 0.8636) and doubles the training time (docs/experiments.md: "Next to the
# TF-IDF branch").
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
DEMO_DIR ?= outputs/word2vec_bilstm_attn

.PHONY: install demo test bench clean

# The distribution was "finetune" before "finetune-zh" (PyPI's "finetune" is another project): the old editable
# install goes first, or it would keep a top-level `recipes` importable.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet --no-compile torch==$(TORCH_VERSION)
	$(PY) -m pip uninstall --quiet --yes finetune 2>/dev/null || true
	$(PY) -m pip install --quiet --no-compile -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/accelerate launch --config_file recipes/accelerate_configs/single_device.yaml \
		recipes/train_bilstm_attention.py --config word2vec_bilstm_attn --output_dir $(DEMO_DIR) \
		--overwrite_output_dir --adversarial_epsilon 0
	$(PY) scripts/show_metrics.py $(DEMO_DIR)/metrics.json
	$(VENV)/bin/finetune predict $(DEMO_DIR) \
		--text "这部电影真的很棒！" --text "这部电影真的很差劲。" \
		--text "物流很快，包装也很好，五星好评" --text "质量太差了，用了两天就坏了，不推荐购买"

test: install
	$(PY) -m pytest -q -n 2 --dist loadscope

bench: install
	$(PY) scripts/benchmark.py

clean:
	rm -rf $(VENV) outputs
