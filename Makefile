# The course's commands. Quick start: `make course` (run everything) and `make test` (CI).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
# TensorFlow's C++ start-up chatter (CUDA/TensorRT lookups on a CPU machine) hides real output.
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: setup course test unit notebooks nbval bench bench-smoke clean headers py313 test-py313

setup:
	@bash scripts/setup_env.sh

## Run the whole course headless (papermill, workshop defaults) and print its summary; its
## temporary files go to a folder of its own, removed afterwards (scripts/private_tmp.sh).
course: setup
	@bash scripts/private_tmp.sh $(PY) scripts/run_course.py
	@bash scripts/check_no_worker_binary.sh

## Unit tests, then every notebook in smoke mode (papermill with parameters, then nbval), on
## JOBS cores with pytest-xdist (load, 2 tests queued per worker: the longest tests are collected
## first, tests/conftest.py, and a free worker takes the next; nbval: each notebook goes whole to
## one worker, its cells in order). JOBS=1: one at a time. Each stage gets a temporary folder of
## its own, removed after it (scripts/private_tmp.sh): killed kernels and test children leave files.
JOBS ?= 2
xdist = $(if $(filter 1,$(JOBS)),,-n $(JOBS) --dist $(1))
XDIST_LOAD := load --maxschedchunk 2
test: setup
	@bash scripts/private_tmp.sh $(PY) -m pytest -q $(call xdist,$(XDIST_LOAD)) tests
	@echo "== nbval (lax) on every notebook, smoke mode =="
	@COURSE_SMOKE=1 bash scripts/private_tmp.sh $(PY) -m pytest -q $(call xdist,loadfile) --nbval-lax \
		-p no:randomly notebooks
	@bash scripts/check_no_worker_binary.sh
	@$(MAKE) --no-print-directory test-py313

unit: setup
	@$(PY) -m pytest -q tests -m "not notebooks"

bench: setup
	@$(PY) -m benchmarks

## The benchmarks' tiny smoke variant (what tests/test_bench.py runs); numbers mean nothing.
bench-smoke: setup
	@$(PY) -m benchmarks --smoke

headers:
	@$(PY) scripts/notebook_header.py

clean:
	rm -rf build

## A stand-in for Colab's default runtime: Python 3.13 with the newest TensorFlow (Keras 3).
PY313 := .venv313/bin/python
py313:
	@bash scripts/setup_py313.sh

## In .venv313: the unit tests that need no TFF (tests marked `tff` need it in this Python or a
## child of it), the notebooks without TFF and notebook 04 (its TFF work through the side
## environment, .venv) in smoke mode, and notebook 04's TFF job through the runner, in one
## pytest-xdist run. COURSE_PY313_ALL=1: every notebook that can run there.
test-py313: setup py313
	@echo "== Python 3.13 + newest TensorFlow (Keras 3): unit tests without TFF, notebooks without TFF (smoke) =="
	@bash scripts/private_tmp.sh $(PY313) -m pytest -q $(call xdist,$(XDIST_LOAD)) -p no:randomly tests -m "not tff and (not notebooks or py313)"
	@bash scripts/check_no_worker_binary.sh
