# Two commands for a fresh machine (Python 3.11+, pip):
#   make demo   install, prepare a small TinyStories set, train on the CPU, print a story (it starts the
#               demo model in out-tinystories-cpu/ afresh each time)
#   make test   install, run the test suite
#   make gguf-check   after make demo: its model in llama.cpp (GGUF), greedy tokens and tokens/s beside ours
# GPU machines: `pip install -r requirements.txt`, then see README.md.
PY ?= python3
# Local copies of TinyStories and the GPT-2 BPE files (the Hugging Face hub may be unreachable).
export SHARED_DATA ?= $(abspath ../shared/data)
TS := $(SHARED_DATA)/tinystories

.PHONY: setup demo test gguf-check
setup:
	$(PY) -m pip install -q -r requirements-cpu.txt

# The demo trains on the local TinyStories files when they exist, else streams 20k stories from the hub.
ifneq ($(wildcard $(TS)/train-v1-head.txt),)
DEMO_SOURCE := --source=$(TS)/train-v1-head.txt,$(TS)/train-v2-head.txt,$(TS)/train-subset-maxme1.txt --val_source=$(TS)/validation-head.txt
else
DEMO_SOURCE := --max_stories=20000
endif

demo: setup
	$(PY) prepare.py $(DEMO_SOURCE) --tokenizer=bpe --vocab_size=4096 --out_dir=data/tinystories-demo
	$(PY) train.py config/train_tinystories_cpu.py --data_dir=data/tinystories-demo --out_dir=out-tinystories-cpu --overwrite=True
	$(PY) sample.py --out_dir=out-tinystories-cpu --start="Once upon a time" --num_samples=1 --max_new_tokens=200 --temperature=0.8 --top_k=50

# The page's test drives Debian's chromium (Playwright's own browser download cannot work here): install it
# when it is missing. pytest exits 5 when it collects no tests: that is not a failure of the code.
CHROMIUM := /usr/bin/chromium
test: setup
	@[ -x $(CHROMIUM) ] || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
		>/dev/null) || echo "could not install chromium (apt-get as root): the browser test will be skipped"
	$(PY) -m pytest -q; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests collected"; rc=0; fi; exit $$rc

# The demo's model (or OUT=another run directory) exported with a GGUF file and run in llama.cpp: its tokenizer
# ids and 50 greedy tokens must equal ours (fp32), and both speeds are printed. Not part of `make test`:
# installing llama-cpp-python compiles llama.cpp from source (~16 minutes on 2 cores).
OUT ?= out-tinystories-cpu
gguf-check: setup
	$(PY) -c "import llama_cpp" 2>/dev/null || $(PY) -m pip install llama-cpp-python
	for t in f32 q8_0; do $(PY) export.py --out_dir=$(OUT) --gguf=$$t --llama_cpp=True || exit 1; done
