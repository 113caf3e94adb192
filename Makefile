# One set-up for both commands: a venv with the package, and Fashion-MNIST on disk.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz

.PHONY: demo test lint data services bench compare compare-lt clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,postgres,names,lightning,tensorboard]'
	touch $(STAMP)

# Debian's package when apt is usable (root), else torchvision's download into ./data.
data: $(STAMP)
	@if [ -f $(FMNIST) ] || [ -f data/train-images-idx3-ubyte.gz ] || [ -f data/FashionMNIST/raw/train-images-idx3-ubyte.gz ]; then \
		echo "Fashion-MNIST: present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "Fashion-MNIST: installing Debian's dataset-fashion-mnist"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist) >/dev/null \
		|| $(VENV)/bin/adaptive-lb fetch fashion_mnist --root data --download; \
	else \
		$(VENV)/bin/adaptive-lb fetch fashion_mnist --root data --download; \
	fi

demo: data
	$(VENV)/bin/adaptive-lb train configs/fashion_mnist.yaml

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# A PostgreSQL server binary for the shared-study tests (they start their own server in a temp folder).
services:
	@if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1; then \
		echo "PostgreSQL: present"; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		echo "PostgreSQL: installing Debian's postgresql"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null; \
	else \
		echo "PostgreSQL: not installed and apt-get unusable: the shared-study tests will be skipped"; \
	fi

test: data services lint
	$(PY) -m pytest -q

bench: data
	$(PY) bench/throughput.py

# methods x 3 seeds on full Fashion-MNIST (about an hour on 2 cores); see bench/README.md
compare: data
	$(PY) bench/compare.py --seeds 0 1 2 --jobs 2

# the baselines on Fashion-MNIST-LT rho=100 (about 80 minutes on 2 cores)
compare-lt: data
	$(PY) bench/compare.py --suite fashion_mnist_lt100 --seeds 0 1 2 --jobs 2

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
