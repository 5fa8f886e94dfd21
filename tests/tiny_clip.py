"""Random-weight CLIP checkpoints built locally (no Hub): tiny for tests, ViT-B/32-sized for timing."""
from pathlib import Path

import torch
from transformers import CLIPConfig, CLIPModel, CLIPTokenizer
from transformers.convert_slow_tokenizer import bytes_to_unicode
from transformers.models.clip import CLIPImageProcessorPil

TINY = dict(text=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4),
            vision=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                        image_size=32, patch_size=8),
            projection_dim=16)
WIDE = dict(text=dict(TINY["text"], hidden_size=48), vision=dict(TINY["vision"], hidden_size=48), projection_dim=24)
VIT_B_32 = dict(text=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8),
                vision=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                            image_size=224, patch_size=32),
                projection_dim=512)
VIT_L_14 = dict(text=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12),
                vision=dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                            image_size=224, patch_size=14),
                projection_dim=768)
ARCHS = {"tiny": TINY, "wide": WIDE, "b32": VIT_B_32, "l14": VIT_L_14}


def byte_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer whose vocabulary is the 256 byte symbols (with and without '</w>'), no merges."""
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    return CLIPTokenizer(vocab=vocab, merges=[])


def bpe_tokenizer(bpe_file) -> CLIPTokenizer:
    """CLIP's own tokenizer (49,408 tokens) from OpenAI's BPE merges file ``bpe_simple_vocab_16e6.txt.gz``
    (shipped in the ``open_clip_torch`` wheel), built as openai/CLIP's SimpleTokenizer builds it."""
    import gzip
    lines = gzip.open(bpe_file).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1:49152 - 256 - 2 + 1]]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    return CLIPTokenizer(vocab={s: i for i, s in enumerate(vocab)}, merges=merges)


def make_clip(folder, size=TINY, seed=0, tokenizer: CLIPTokenizer | None = None) -> Path:
    """Save a random-weight CLIPModel, tokenizer (default: ``byte_tokenizer``) and image processor to ``folder``."""
    folder = Path(folder)
    tok = tokenizer or byte_tokenizer()
    special = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    config = CLIPConfig(text_config=dict(vocab_size=len(tok), max_position_embeddings=77, **special, **size["text"]),
                        vision_config=size["vision"], projection_dim=size["projection_dim"])
    torch.manual_seed(seed)
    CLIPModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    px = size["vision"]["image_size"]
    CLIPImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px}).save_pretrained(folder)
    return folder
