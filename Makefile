# The course's commands. Quick start: `make course` (run everything) and `make test` (CI).
SHELL := /bin/bash
PY := .venv/bin/python
export PYTHONPATH := $(CURDIR)
# TensorFlow's C++ start-up chatter (CUDA/TensorRT lookups on a CPU machine) hides real output.
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: setup course test unit notebooks nbval bench bench-smoke clean headers

setup:
	@bash scripts/setup_env.sh

## Run the whole course headless (papermill, workshop defaults) and print its summary.
course: setup
	@$(PY) scripts/run_course.py

## Unit tests, then every notebook in smoke mode (papermill with parameters, then nbval).
test: setup
	@$(PY) -m pytest -q tests
	@echo "== nbval (lax) on every notebook, smoke mode =="
	@COURSE_SMOKE=1 $(PY) -m pytest -q --nbval-lax -p no:randomly notebooks
	@bash scripts/check_no_worker_binary.sh

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
