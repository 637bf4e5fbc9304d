"""Tiny models built on the fly, offline, for tests and demos of the local kind.

Each is a real `transformers` model with random weights and a real tokenizer
trained here on a few sentences, saved with `save_pretrained` exactly as a model
downloaded from the Hub is laid out, so the loading code under test is the real one.
Needs the optional extra (torch, transformers, tokenizers).
"""

from __future__ import annotations

from pathlib import Path

# Imported first: the adapter's package switches the Hub off before transformers loads.
import connections.providers.huggingface  # noqa: F401

SENTENCES = [
    "the cat sat on the mat and looked at the dog",
    "a good day is a happy day with the sun and friends",
    "this movie was bad and boring and i hated it",
    "this movie was great and fun and i loved it",
    "the report says the quarter was strong for sales",
    "summarize the meeting notes for the finance team",
    "hello how are you today my friend",
    "user assistant system",
]
SPECIALS = [
    "<pad>",
    "<unk>",
    "<s>",
    "</s>",
    "<|user|>",
    "<|assistant|>",
    "<|system|>",
    "[CLS]",
    "[SEP]",
]
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|> {{ message['content'] }} </s> "
    "{% endfor %}{% if add_generation_prompt %}<|assistant|> {% endif %}"
)


def build_tokenizer(**special):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.WordLevel(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    raw.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    raw.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    return PreTrainedTokenizerFast(
        tokenizer_object=raw,
        unk_token="<unk>",
        pad_token="<pad>",
        **special,
    )


def _quiet_specials(model, tokenizer, *, min_new_tokens: int) -> None:
    # Random weights favour whatever token they favour, often a special one that decodes
    # to nothing: leave those out (the end token stays allowed) so answers have words.
    end = tokenizer.eos_token_id
    model.generation_config.suppress_tokens = [
        tokenizer.convert_tokens_to_ids(token)
        for token in SPECIALS
        if tokenizer.convert_tokens_to_ids(token) != end
    ]
    model.generation_config.min_new_tokens = min_new_tokens


def build_chat_model(path: Path) -> Path:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    tokenizer = build_tokenizer(bos_token="<s>", eos_token="</s>")
    tokenizer.chat_template = CHAT_TEMPLATE
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=1024,
        n_embd=32,
        n_layer=2,
        n_head=2,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config)
    _quiet_specials(model, tokenizer, min_new_tokens=2)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_classifier(path: Path) -> Path:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(1)
    tokenizer = build_tokenizer(cls_token="[CLS]", sep_token="[SEP]")
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        id2label={0: "negative", 1: "positive"},
        label2id={"negative": 0, "positive": 1},
    )
    BertForSequenceClassification(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_summarizer(path: Path) -> Path:
    import torch
    from transformers import BartConfig, BartForConditionalGeneration

    torch.manual_seed(2)
    tokenizer = build_tokenizer(bos_token="<s>", eos_token="</s>")
    config = BartConfig(
        vocab_size=len(tokenizer),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.eos_token_id,
        forced_eos_token_id=None,
    )
    model = BartForConditionalGeneration(config)
    _quiet_specials(model, tokenizer, min_new_tokens=3)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def build_all(directory: Path) -> dict[str, Path]:
    """Every tiny model in its own folder under `directory`, by model name."""
    directory.mkdir(parents=True, exist_ok=True)
    return {
        "tiny-chat": build_chat_model(directory / "tiny-chat"),
        "tiny-sentiment": build_classifier(directory / "tiny-sentiment"),
        "tiny-summarizer": build_summarizer(directory / "tiny-summarizer"),
    }
