# Seed 004 (a CS336 assignment 1 solution): the CS336 Transformer LM on TinyStoriesV2-GPT4.
# From the seed: 4 layers, d_model 512, 16 heads, d_ff 1344, RoPE, 32,000-token BPE, context 256; AdamW,
# lr 5e-4 with 500 warmup steps then cosine to 1e-4 at step 5,000, wd 0.01, batch 32, clip 1.0.
# Per the CS336 handout (not restated in the seed): pre-norm RMSNorm, SwiGLU, no biases, untied embeddings.
#   python prepare.py --source=TinyStoriesV2-GPT4-train.txt --val_source=TinyStoriesV2-GPT4-valid.txt \
#                     --vocab_size=32000 --out_dir=data/seed004     # the two files from the hub, downloaded
#   python train.py config/seed004.py
# Not stated, chosen here: betas (0.9, 0.95), no dropout.
out_dir = 'out-seed004'
data_dir = 'data/seed004'
eval_interval = 500
eval_iters = 50
wandb_run_name = 'seed004-cs336'

n_layer = 4
n_head = 16
n_embd = 512
mlp_hidden = 1344
act = 'swiglu'
norm = 'rmsnorm'
norm_pos = 'pre'
pos = 'rope'
bias = False
tie_weights = False
dropout = 0.0
block_size = 256

batch_size = 32
gradient_accumulation_steps = 1
learning_rate = 5e-4
lr_schedule = 'cosine'
warmup_iters = 500
max_iters = 5000
lr_decay_iters = 5000
min_lr = 1e-4
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.01
grad_clip = 1.0
