# The course's commands. Quick start: `make course` (run everything) and `make test` (CI).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
# TensorFlow's C++ start-up chatter (CUDA/TensorRT lookups on a CPU machine) hides real output.
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: setup course test unit notebooks nbval bench bench-smoke clean headers py313 test-py313

setup:
	@bash scripts/setup_env.sh

## Run the whole course headless (papermill, workshop defaults) and print its summary.
course: setup
	@$(PY) scripts/run_course.py
	@bash scripts/check_no_worker_binary.sh

## Unit tests, then every notebook in smoke mode (papermill with parameters, then nbval).
test: setup
	@$(PY) -m pytest -q tests
	@echo "== nbval (lax) on every notebook, smoke mode =="
	@COURSE_SMOKE=1 $(PY) -m pytest -q --nbval-lax -p no:randomly notebooks
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
# Tests that start TFF in a subprocess of the running Python: they run in the Python 3.11 run
# above (mark them `tff` and they drop out of here by themselves).
PY313_DESELECT := --deselect tests/test_bench.py::test_bench_smoke_end_to_end \
	--deselect tests/test_tff.py::test_tff_fedavg_equals_manual_fedavg
py313:
	@bash scripts/setup_py313.sh

## In .venv313: the unit tests that need no TFF, the notebooks without TFF and notebooks 00 and 04
## (their TFF work through the side environment, .venv) in smoke mode, and notebook 04's TFF job
## through the runner. COURSE_PY313_ALL=1: every notebook that can run there.
test-py313: setup py313
	@echo "== Python 3.13 + newest TensorFlow (Keras 3): unit tests without TFF =="
	@$(PY313) -m pytest -q -p no:randomly tests -m "not tff and not notebooks" $(PY313_DESELECT)
	@echo "== Python 3.13 + newest TensorFlow (Keras 3): notebooks without TFF, smoke mode =="
	@$(PY313) -m pytest -q -p no:randomly tests/test_py313.py -m notebooks
	@bash scripts/check_no_worker_binary.sh
