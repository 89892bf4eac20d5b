# Seed 003 (jrussell25/scratch-former): a Vaswani-style decoder on WikiText-2 (NOT TinyStories: prepare must
# be pointed at WikiText). From the seed: 4 layers, d_model 512, d_ff 1024, ReLU, LayerNorm, sinusoidal
# positions, context 256, batch 10, label smoothing and the learning-rate schedule of Vaswani et al. 2017
# with 4,000 warmup steps, 200k steps, no dropout; articles joined with <|endoftext|>.
#   python prepare.py --source=wikitext --hf_config=wikitext-2-raw-v1 --tokenizer=gpt2 --out_dir=data/wikitext2
# Offline, only WikiText-2's valid and test splits are at hand (no train split), so this trains on valid
# and validates on test, a stand-in for the real thing:
#   python prepare.py --source=$SHARED_DATA/wikitext-2/valid.txt --val_source=$SHARED_DATA/wikitext-2/test.txt \
#                     --tokenizer=gpt2 --out_dir=data/wikitext2
#   python train.py config/seed003.py
# The seed used tiktoken's ~100k-token BPE; we use GPT-2's 50,257 (the one available offline).
# Schedule: Vaswani's lr = d_model^-0.5 * min(step^-0.5, step * 4000^-1.5) peaks at 512^-0.5 * 4000^-0.5
# = 6.99e-4; train.py's 'vaswani' schedule takes that peak as learning_rate. Adam as in the paper:
# betas (0.9, 0.98), no weight decay (the paper's eps 1e-9 is not a setting; PyTorch's 1e-8 is used).
# Label smoothing 0.1 as in the paper. Not stated, chosen here: 8 heads (the paper's base model), post-norm
# (the paper's, which its warmup was designed for), biases, tied embeddings, no gradient clipping.
out_dir = 'out-seed003'
data_dir = 'data/wikitext2'
eval_interval = 10000
eval_iters = 50
wandb_run_name = 'seed003-vaswani-wikitext2'

n_layer = 4
n_head = 8
n_embd = 512
mlp_hidden = 1024
act = 'relu'
norm = 'layernorm'
norm_pos = 'post'
pos = 'sinusoidal'
bias = True
tie_weights = True
dropout = 0.0
label_smoothing = 0.1
block_size = 256

batch_size = 10
gradient_accumulation_steps = 1
learning_rate = 6.99e-4
lr_schedule = 'vaswani'
warmup_iters = 4000
max_iters = 200000
beta1 = 0.9
beta2 = 0.98
weight_decay = 0.0
grad_clip = 0.0
