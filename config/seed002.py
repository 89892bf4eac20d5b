# Seed 002 ("Building a GPT-2 transformer-based model from scratch"): GPT-2 small on TinyStories, with layer
# normalisation AFTER the attention and feed-forward sub-layers, as the assignment's text specifies (post-LN,
# as in Vaswani et al., not GPT-2's pre-LN). 12 layers, 768 wide, 12 heads, 4x GELU MLP, learned positions,
# biases, tied embeddings, dropout 0.1, GPT-2's own 50,257-token BPE and 1,024-token context: ~124M parameters.
#   python prepare.py --tokenizer=gpt2 --out_dir=data/tinystories-gpt2
#   python train.py config/seed002.py
#   torchrun --standalone --nproc_per_node=8 train.py config/seed002.py
# The seed asks for "at least 5 epochs": 36,000 steps x 64k tokens = 2.4B tokens, ~5 passes over the
# ~470M GPT-2 tokens of the train split (~1.5 hours on an H100 at 40% MFU). Not stated, chosen here: AdamW
# (0.9, 0.95), wd 0.1, peak lr 3e-4 with a long 2,000-step warmup and clip 1.0 (post-LN at depth 12 diverges
# with GPT-2's 6e-4 and short warmups), cosine to 3e-5.
out_dir = 'out-seed002'
data_dir = 'data/tinystories-gpt2'
eval_interval = 1000
eval_iters = 50
wandb_run_name = 'seed002-gpt2-small-postln'

n_layer = 12
n_head = 12
n_embd = 768
act = 'gelu'
norm = 'layernorm'
norm_pos = 'post'
pos = 'learned'
bias = True
tie_weights = True
dropout = 0.1
block_size = 1024

batch_size = 8
gradient_accumulation_steps = 8  # 8 x 8 x 1024 = 65,536 tokens per step, on 1, 2, 4 or 8 GPUs
learning_rate = 3e-4
lr_schedule = 'cosine'
warmup_iters = 2000
max_iters = 36000
lr_decay_iters = 36000
min_lr = 3e-5
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
grad_clip = 1.0
