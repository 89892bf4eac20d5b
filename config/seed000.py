# Seed 000 ("Project 2: Transformer architecture and LM pre-training"): a GPT-2-style model on TinyStories.
# Table from the seed: 4 layers, d_model 128, 4 heads, d_ff 512 (4x), GELU, pre-LayerNorm, tied embeddings,
# 8,000-token BPE trained on the data, context 256; AdamW (0.9, 0.95), peak lr 3e-4, cosine with 500 warmup
# steps, 10,000 steps, micro-batch 16 x 16 accumulation (256 sequences per step), clip 1.0, wd 0.1, dropout 0.1.
# Its data: the first 50,000 stories, split ~95/5:
#   python prepare.py --max_stories=50000 --val_fraction=0.05 --vocab_size=8000 --out_dir=data/seed000
#   python train.py config/seed000.py
# Not stated in the seed, chosen here: learned positions (GPT-2 style), biases on (nn.Linear's default), and
# min_lr = 10% of the peak. The seed quotes ~3.5M parameters; its own table gives ~1.9M (1.0M of them the
# 8000 x 128 embedding), which is what this builds.
out_dir = 'out-seed000'
data_dir = 'data/seed000'
eval_interval = 500
eval_iters = 50
wandb_run_name = 'seed000'

n_layer = 4
n_head = 4
n_embd = 128
mlp_hidden = 512
act = 'gelu'
norm = 'layernorm'
norm_pos = 'pre'
pos = 'learned'
bias = True
tie_weights = True
dropout = 0.1
block_size = 256

batch_size = 16
gradient_accumulation_steps = 16
learning_rate = 3e-4
lr_schedule = 'cosine'
warmup_iters = 500
max_iters = 10000
lr_decay_iters = 10000
min_lr = 3e-5
beta1 = 0.9
beta2 = 0.95
weight_decay = 0.1
grad_clip = 1.0
