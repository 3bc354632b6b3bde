"""PyTorch baseline for the models bench: forward and training throughput of a GPT-2 of the same
shape as familiar's, in tokens per CPU-second (process time, all threads). Prints one JSON line.

    python3 benches/torch_baseline.py VOCAB HIDDEN LAYERS HEADS CONTEXT BATCH STEPS
"""

import json
import sys
import time

import torch
from transformers import GPT2Config, GPT2LMHeadModel


def main():
    vocab, hidden, layers, heads, context, batch, steps = map(int, sys.argv[1:8])
    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(vocab_size=vocab, n_embd=hidden, n_layer=layers, n_head=heads,
                                       n_positions=context, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0))
    params = sum(p.numel() for p in model.parameters())
    ids = torch.randint(0, vocab, (batch, context + 1))
    x, y = ids[:, :-1], ids[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.95), weight_decay=0.1)
    model.eval()
    with torch.no_grad():
        model(x)
        c0 = time.process_time()
        for _ in range(steps):
            model(x)
        fwd = time.process_time() - c0
    model.train()
    loss_fn = torch.nn.CrossEntropyLoss()
    c0 = time.process_time()
    for _ in range(steps):
        logits = model(x).logits
        loss = loss_fn(logits.reshape(-1, vocab), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    train = time.process_time() - c0
    tokens = batch * context * steps
    print(json.dumps({"parameters": params, "threads": torch.get_num_threads(),
                      "forward_tokens_per_cpu_s": tokens / fwd, "train_tokens_per_cpu_s": tokens / train,
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
