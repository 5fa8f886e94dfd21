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


def siglip_tokenizer():
    """A SigLIP-like fast tokenizer built with ``tokenizers`` (no sentencepiece model needed): byte-level symbols,
    no merges, "</s>" appended to every prompt, pad and unknown tokens; it gives the model input_ids only."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(["<pad>", "</s>", "<unk>"] + symbols)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_input_names=["input_ids"])


def make_siglip(folder, seed=0) -> Path:
    """Save a random-weight tiny SiglipModel (text padded to 64 tokens, as SigLIP's are), its tokenizer and its
    image processor to ``folder``."""
    from transformers import SiglipConfig, SiglipModel
    from transformers.models.siglip import SiglipImageProcessorPil
    return _siglip_family(folder, seed, SiglipConfig, SiglipModel, dict(image_size=32, patch_size=8),
                          SiglipImageProcessorPil(size={"height": 32, "width": 32}))


def make_siglip2(folder, seed=0) -> Path:
    """Save a random-weight tiny Siglip2Model (NaFlex: 8-pixel patches, at most 16 per image), the SigLIP-like
    tokenizer and its image processor to ``folder``."""
    from transformers import Siglip2Config, Siglip2Model
    from transformers.models.siglip2 import Siglip2ImageProcessorPil
    return _siglip_family(folder, seed, Siglip2Config, Siglip2Model, dict(patch_size=8, num_patches=16),
                          Siglip2ImageProcessorPil(patch_size=8, max_num_patches=16))


def _siglip_family(folder, seed, config_class, model_class, vision: dict, image_processor) -> Path:
    folder = Path(folder)
    tok = siglip_tokenizer()
    tower = dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)
    config = config_class(text_config=dict(vocab_size=len(tok), max_position_embeddings=64, pad_token_id=0,
                                           eos_token_id=1, bos_token_id=1, **tower),
                          vision_config=dict(**vision, **tower))
    torch.manual_seed(seed)
    model_class(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    image_processor.save_pretrained(folder)
    return folder
