# Seed 001 (KevinL10/lm, after Stanford CS336 assignment 1): a Llama-style model on TinyStoriesV2-GPT4.
# From the seed: 4 layers, d_model 512, 16 heads, d_ff 1344, pre-norm RMSNorm, RoPE (theta 10,000), SwiGLU,
# plain multi-head attention, context 256, 10,000-token BPE; AdamW, lr 1e-3, batch 32, linear warmup then
# cosine. Its "~23M parameters" holds only with separate input and output embeddings (2 x 10000 x 512 =
# 10.2M, plus 12.5M in the layers), so weights are untied, as in CS336.
#   python prepare.py --source=TinyStoriesV2-GPT4-train.txt --val_source=TinyStoriesV2-GPT4-valid.txt \
#                     --vocab_size=10000 --out_dir=data/seed001     # the two files from the hub, downloaded
#   python train.py config/seed001.py
# Not stated in the seed, chosen here: 40,000 steps (32 x 256 x 40,000 = 327.68M tokens, CS336's TinyStories
# budget), 1,000 warmup steps, min_lr 1e-4, betas (0.9, 0.95), wd 0.1, clip 1.0, no biases, no dropout.
out_dir = 'out-seed001'
data_dir = 'data/seed001'
eval_interval = 1000
eval_iters = 50
wandb_run_name = 'seed001'

n_layer = 4
n_head = 16
n_embd = 512
mlp_hidden = 1344
act = 'swiglu'
norm = 'rmsnorm'
norm_pos = 'pre'
pos = 'rope'
rope_theta = 10000.0
bias = False
tie_weights = False
dropout = 0.0
block_size = 256

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 1e-3
lr_schedule = 'cosine'
warmup_iters = 1000
max_iters = 40000
lr_decay_iters = 40000
min_lr = 1e-4
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
grad_clip = 1.0
