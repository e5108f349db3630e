#!/usr/bin/env python3
"""Generate the golden fixtures under tests/fixtures/ for clipcanvas.

Run from the repository root:

    python tests/reference/make_fixtures.py            # everything
    python tests/reference/make_fixtures.py tokenizer  # one or more sections

Sections: tokenizer, clip, vqgan, grad, manifests.

Deterministic: every random draw comes from torch generators seeded here, and
the script can be re-run at any time; it rewrites its outputs in place.
No network access and no model weights are needed: every model is tiny and
randomly initialised, or built on torch's meta device (shape manifests).

Weights are written in float16 (fixture size, and it exercises the loaders'
f16 path). Every parameter is rounded to f16 in place before anything is
computed, and the expected outputs are computed in float32 from the model as
reloaded from the written files, so f16 -> f32 loading reproduces them exactly.
"""

from __future__ import annotations

import copy
import gzip
import importlib
import io
import json
import os
import pickle
import shutil
import sys
import tempfile
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "tests" / "fixtures"

CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]

torch.set_num_threads(1)  # bit-for-bit reproducible CPU reductions
torch.use_deterministic_algorithms(True)


def seed(n: int) -> torch.Generator:
    torch.manual_seed(n)
    np.random.seed(n)
    return torch.Generator().manual_seed(n)


def perturb_(module: torch.nn.Module, gen: torch.Generator, std: float = 0.02, skip=()) -> None:
    """Add N(0, std) noise to every parameter (biases, norms included)."""
    with torch.no_grad():
        for name, p in module.named_parameters():
            if any(name.startswith(s) for s in skip):
                continue
            p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * std)


def save_st(path: Path, tensors: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = {}
    for k, v in tensors.items():
        v = v.detach().cpu().contiguous()
        if v.is_floating_point():
            v = v.to(torch.float32)
        elif v.dtype != torch.int64:
            v = v.to(torch.int64)
        out[k] = v.clone()
    save_file(out, str(path))


def round_f16_(module: torch.nn.Module) -> None:
    """Round every float parameter and buffer to float16 and back, in place.

    The weight files are written in float16; the expected outputs are computed
    in float32 from exactly these rounded values, so a loader that reads the f16
    tensors and widens them to f32 reproduces the expected outputs exactly."""
    with torch.no_grad():
        for p in module.parameters():
            p.data = p.data.half().float()
        for b in module.buffers():
            if b.is_floating_point():
                b.copy_(b.half().float())


def f16_state(sd: dict) -> OrderedDict:
    """A copy of a state dict with every float tensor in float16; integer
    tensors (position_ids, num_batches_tracked) keep their dtype."""
    out = OrderedDict()
    for k, v in sd.items():
        v = v.detach().clone().contiguous()
        if v.is_floating_point():
            h = v.half()
            assert torch.equal(h.float(), v.float()), f"{k} is not f16-exact: round it first"
            v = h
        out[k] = v
    return out


def assert_same_params(a: torch.nn.Module, b: torch.nn.Module) -> None:
    """b (reloaded from disk) holds exactly a's (rounded, in-memory) values, in float32."""
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys(), set(sa) ^ set(sb)
    for k in sa:
        assert sb[k].dtype == sa[k].dtype, (k, sa[k].dtype, sb[k].dtype)
        assert torch.equal(sa[k], sb[k]), k


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False)
        f.write("\n")


# ---------------------------------------------------------------------------
# taming-transformers compatibility shim
# ---------------------------------------------------------------------------
# taming/main.py (imported by taming.models.*) pulls
# pytorch_lightning.utilities.distributed, gone from Lightning >= 1.8. Only
# instantiate_from_config / get_obj_from_str are needed from it, so a stand-in
# module with exact copies of those two functions is put into sys.modules. The
# model classes themselves (Encoder, Decoder, VectorQuantizer2, GumbelQuantize,
# VQModel, GumbelVQ, Net2NetTransformer, GPT) are the real upstream ones.

def _install_taming_shim() -> None:
    if "taming.main" in sys.modules:
        return
    shim = types.ModuleType("taming.main")

    def get_obj_from_str(string, reload=False):
        module, cls = string.rsplit(".", 1)
        if reload:
            importlib.reload(importlib.import_module(module))
        return getattr(importlib.import_module(module, package=None), cls)

    def instantiate_from_config(config):
        if "target" not in config:
            raise KeyError("Expected key `target` to instantiate.")
        return get_obj_from_str(config["target"])(**config.get("params", dict()))

    shim.get_obj_from_str = get_obj_from_str
    shim.instantiate_from_config = instantiate_from_config
    sys.modules["taming.main"] = shim

    # taming/modules/transformer/mingpt.py imports transformers.top_k_top_p_filtering
    # (removed in transformers 4.40); it is only used for sampling, never here.
    import transformers
    if not hasattr(transformers, "top_k_top_p_filtering"):
        def top_k_top_p_filtering(*args, **kwargs):
            raise NotImplementedError("sampling is not used by the fixture script")
        transformers.top_k_top_p_filtering = top_k_top_p_filtering


def taming():
    _install_taming_shim()
    from taming.main import instantiate_from_config  # noqa: F401  (the shim)
    import taming.models.vqgan as vqgan
    import taming.models.cond_transformer as cond_transformer
    return vqgan, cond_transformer, sys.modules["taming.main"].instantiate_from_config


DUMMY_LOSS = {"target": "taming.modules.losses.vqperceptual.DummyLoss"}


def instantiate_first_stage(cfg: dict):
    """Instantiate a taming model from a `model:` config dict with DummyLoss
    (the real VQLPIPSWithDiscriminator would download VGG weights)."""
    _, _, inst = taming()
    cfg = copy.deepcopy(cfg)
    cfg["params"]["lossconfig"] = DUMMY_LOSS
    cfg["params"].pop("ckpt_path", None)
    return inst(cfg)


# ---------------------------------------------------------------------------
# Lightning-1.x-style checkpoint with classes nobody else can import
# ---------------------------------------------------------------------------
# Real taming checkpoints pickle `pytorch_lightning.callbacks.model_checkpoint.
# ModelCheckpoint` (a class object used as a dict key) and Lightning's
# AttributeDict. Loaders must cope with globals they cannot resolve, so these
# stand-ins live in a module that exists only while this script runs.

FAKE_PL = "clipcanvas_fixture_only_pl"


def _fake_pl_module():
    names = [FAKE_PL, FAKE_PL + ".callbacks", FAKE_PL + ".callbacks.model_checkpoint",
             FAKE_PL + ".utilities", FAKE_PL + ".utilities.parsing"]
    for n in names:
        if n not in sys.modules:
            sys.modules[n] = types.ModuleType(n)
    mc = sys.modules[FAKE_PL + ".callbacks.model_checkpoint"]
    ps = sys.modules[FAKE_PL + ".utilities.parsing"]
    if not hasattr(mc, "ModelCheckpoint"):
        class ModelCheckpoint:  # noqa: D401  - stand-in
            pass
        ModelCheckpoint.__module__ = mc.__name__
        ModelCheckpoint.__qualname__ = "ModelCheckpoint"
        mc.ModelCheckpoint = ModelCheckpoint

        class AttributeDict(dict):
            pass
        AttributeDict.__module__ = ps.__name__
        AttributeDict.__qualname__ = "AttributeDict"
        ps.AttributeDict = AttributeDict
    return mc.ModelCheckpoint, ps.AttributeDict


def adam_state(params: list, gen: torch.Generator, lr: float) -> dict:
    """A real torch.optim.Adam state_dict after one step on copies of params."""
    copies = [torch.nn.Parameter(p.detach().clone()) for p in params]
    opt = torch.optim.Adam(copies, lr=lr, betas=(0.5, 0.9))
    for c in copies:
        c.grad = torch.randn(c.shape, generator=gen) * 1e-3
    opt.step()
    return opt.state_dict()


def lightning_ckpt(state_dict: dict, opt_params: list, gen: torch.Generator, hparams: dict) -> dict:
    """A Lightning-1.x-style checkpoint. The state_dict is stored in float16
    (every float tensor, loss.* included; int64 entries such as
    num_batches_tracked stay int64). opt_params: one list of (rounded) tensors
    per optimizer; keep them to a few small tensors, their Adam state is float32
    as in mixed-precision training."""
    ModelCheckpoint, AttributeDict = _fake_pl_module()
    return {
        "epoch": 3,
        "global_step": 12345,
        "pytorch-lightning_version": "1.0.8",
        "callbacks": {
            ModelCheckpoint: {
                "best_model_score": torch.tensor(0.1234),
                "best_model_path": "logs/2020-11-09T13-33-36_fixture/checkpoints/epoch=000003.ckpt",
            }
        },
        "optimizer_states": [adam_state(ps, gen, 4.5e-6) for ps in opt_params],
        "lr_schedulers": [],
        "state_dict": f16_state(state_dict),
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(hparams),
    }


def torch_save_and_check(obj, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, str(path))  # zip format, pickle protocol 2
    # sanity: weights_only loading must fail on the unknown class, full loading works now
    try:
        torch.load(str(path), map_location="cpu", weights_only=True)
        raise AssertionError("expected weights_only load to fail")
    except pickle.UnpicklingError:
        pass
    torch.load(str(path), map_location="cpu", weights_only=False)


def fake_loss_entries(gen: torch.Generator) -> dict:
    """A few loss.* tensors with the names VQLPIPSWithDiscriminator gives them."""
    r = lambda *s: (torch.randn(*s, generator=gen) * 0.05).half().float()  # noqa: E731
    return OrderedDict([
        ("loss.logvar", torch.tensor(0.0)),
        ("loss.perceptual_loss.scaling_layer.shift",
         torch.tensor([-.030, -.088, -.188]).half().float()[None, :, None, None]),
        ("loss.perceptual_loss.scaling_layer.scale",
         torch.tensor([.458, .448, .450]).half().float()[None, :, None, None]),
        ("loss.perceptual_loss.net.slice1.0.weight", r(64, 3, 3, 3)),
        ("loss.perceptual_loss.net.slice1.0.bias", r(64)),
        ("loss.perceptual_loss.lin0.model.1.weight", r(1, 64, 1, 1)),
        ("loss.discriminator.main.0.weight", r(64, 3, 4, 4)),
        ("loss.discriminator.main.0.bias", r(64)),
        ("loss.discriminator.main.3.weight", r(64)),
        ("loss.discriminator.main.3.bias", r(64)),
        ("loss.discriminator.main.3.running_mean", r(64)),
        ("loss.discriminator.main.3.running_var", (r(64).abs() + 1.0).half().float()),
        ("loss.discriminator.main.3.num_batches_tracked", torch.tensor(12345, dtype=torch.int64)),
    ])


# ---------------------------------------------------------------------------
# 1. tokenizer
# ---------------------------------------------------------------------------

TOKENIZER_CASES = [
    # plain art prompts
    "a painting of a fox in the style of starry night",
    "A fantasy landscape, trending on ArtStation",
    "an oil painting of a lighthouse at dawn by Ivan Aivazovsky",
    "cyberpunk city at night, neon lights, rain, unreal engine",
    "a watercolor of a cat",
    "the quick brown fox jumps over the lazy dog",
    "portrait of a woman, highly detailed, 4k, 8k, octane render",
    "matte painting of a castle in the clouds by greg rutkowski",
    "a photo of an astronaut riding a horse",
    "psychedelic mushroom forest",
    # vqgan+clip weighted prompt syntax
    "a red rose:1.5",
    "a forest:-0.5",
    "a city|a river:2|fog:-1",
    "the sky | the sea : 0.75",
    "style: vaporwave",
    # punctuation and numbers
    "hello, world! how's it going?",
    "don't won't can't I'm you're we've they'll he'd",
    "DON'T SHOUT it's ok",
    "1234567890",
    "3.14159 and 2,718",
    "version 2.0.1-beta (final) [draft] {x}",
    "e-mail: someone@example.com; url: https://example.com/a?b=c&d=e",
    "!!!???...",
    "#hashtag @mention $100 50% ^caret *star ~tilde `tick`",
    "a---b___c///d\\\\e",
    # html entities (open_clip unescapes twice)
    "Tom &amp; Jerry",
    "&quot;quoted&quot; and &#39;single&#39;",
    "&amp;amp; double escaped",
    "fish &lt;3 chips &gt; all",
    "&nbsp;non breaking&nbsp;",
    "<b>bold</b> and <i>italic</i>",
    # quotes / ligatures / width (ftfy)
    "\u201ccurly double quotes\u201d and \u2018curly single\u2019",
    "it\u2019s a dog\u2019s life",
    "\ufb01ne \ufb02ower \ufb00ort",
    "\uff21\uff22\uff23 fullwidth \uff11\uff12\uff13",
    "em\u2014dash and en\u2013dash\u2026",
    "mojibake: caf\u00c3\u00a9",
    # unicode
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber",
    "cafe\u0301 (combining accent)",
    "\u00c9COLE FRAN\u00c7AISE",
    "\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u4e2d\u6587\u5b57\u7b26 \u5c71\u6c34\u753b",
    "\ud55c\uad6d\uc5b4 \ud14d\uc2a4\ud2b8",
    "\u0440\u0443\u0441\u0441\u043a\u0438\u0439 \u0442\u0435\u043a\u0441\u0442",
    "\u0395\u03bb\u03bb\u03b7\u03bd\u03b9\u03ba\u03ac",
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "emoji \U0001f98a\U0001f525\u2728 party \U0001f389",
    "family \U0001f468\u200d\U0001f469\u200d\U0001f467 flag \U0001f1fa\U0001f1f8",
    "math \u2211 \u221e \u2248 \u00b1 \u00b2",
    # whitespace
    "   leading and trailing   ",
    "multiple     spaces   between",
    "tabs\tand\nnewlines\r\nmixed",
    "\n\n\t  \n",
    "non\u00a0breaking\u2003em space",
    "zero\u200bwidth",
    # case
    "UPPER CASE PROMPT",
    "MiXeD CaSe PrOmPt",
    "\u0130stanbul STRASSE stra\u00dfe",
    # special-token lookalikes
    "<|endoftext|>",
    "before <|startoftext|> after",
    "<start_of_text> <end_of_text>",
    # empty
    "",
    " ",
    # long prompts (> 77 tokens)
    "a highly detailed matte painting of an ancient city floating in the sky, with waterfalls pouring "
    "off the edges, golden hour lighting, volumetric fog, intricate architecture, towers and bridges, "
    "birds flying, by greg rutkowski and thomas kinkade and james gurney, trending on artstation, "
    "unreal engine, 8k resolution, masterpiece, award winning, cinematic composition, dramatic clouds",
    " ".join(["word"] * 100),
    " ".join(str(i) for i in range(100)),
    "lorem ipsum " * 60,
    "supercalifragilisticexpialidocious " * 20,
    "!" * 300,
    "\u65e5\u672c" * 80,
]


def build_clip_bpe_files(dst: Path) -> None:
    """vocab.json + merges.txt exactly as openai/CLIP's SimpleTokenizer builds
    its vocabulary from bpe_simple_vocab_16e6.txt.gz."""
    from open_clip.tokenizer import bytes_to_unicode, default_bpe
    lines = gzip.open(default_bpe()).read().decode("utf-8").split("\n")
    merges = lines[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    for m in merges:
        vocab.append("".join(m.split()))
    vocab.extend(["<|startoftext|>", "<|endoftext|>"])
    assert len(vocab) == 49408 and len(set(vocab)) == 49408
    with open(dst / "vocab.json", "w", encoding="utf-8") as f:
        json.dump({v: i for i, v in enumerate(vocab)}, f, ensure_ascii=False)
    with open(dst / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "\n".join(merges) + "\n")


def pad77(ids: list) -> list:
    ids = list(ids)
    if len(ids) > 77:
        ids = ids[:77]
        ids[-1] = 49407
    return ids + [0] * (77 - len(ids))


def make_tokenizer() -> None:
    import open_clip
    from transformers import CLIPTokenizerFast

    out = FIX / "tokenizer"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        build_clip_bpe_files(td)
        tok = CLIPTokenizerFast.from_pretrained(str(td))
        assert len(tok) == 49408, len(tok)
        tok.save_pretrained(str(td / "saved"))
        tj = json.loads((td / "saved" / "tokenizer.json").read_text(encoding="utf-8"))
    # Write merges in the "a b" string form that the published
    # openai/clip-vit-* tokenizer.json files use (tokenizers reads both forms).
    merges = tj["model"]["merges"]
    assert len(merges) == 48894, len(merges)
    if merges and isinstance(merges[0], list):
        assert all(" " not in a and " " not in b for a, b in merges)
        tj["model"]["merges"] = [f"{a} {b}" for a, b in merges]
    assert len(tj["model"]["vocab"]) == 49408
    with open(out / "tokenizer.json", "w", encoding="utf-8") as f:
        json.dump(tj, f, ensure_ascii=False, indent=2)
        f.write("\n")

    # re-load what was written, the way a consumer would
    from tokenizers import Tokenizer
    fast = Tokenizer.from_file(str(out / "tokenizer.json"))

    def hf_ids(text: str) -> list:
        enc = fast.encode(text)  # post-processor adds <|startoftext|> ... <|endoftext|>
        return pad77(enc.ids)

    cases = []
    n_diff = 0
    for text in TOKENIZER_CASES:
        oc = open_clip.tokenize([text])[0].tolist()
        hf = hf_ids(text)
        assert len(oc) == 77 and oc[0] == 49406
        cases.append({"text": text, "ids": oc, "hf_ids": hf, "same": oc == hf})
        n_diff += oc != hf
    # plain prompts must agree
    for c in cases[:10]:
        assert c["same"], c
    assert len(cases) >= 60
    write_json(out / "cases.json", cases)
    print(f"tokenizer: {len(cases)} cases, {n_diff} differ between open_clip and plain HF")


# ---------------------------------------------------------------------------
# 2. tiny CLIP
# ---------------------------------------------------------------------------

CLIP_PROMPTS = [
    "a painting of a fox in the style of starry night",
    "a watercolor of a cat",
    "cyberpunk city at night, neon lights, rain",
    "",
]


def tiny_clip_config(vocab_size: int, eos_token_id: int, bos_token_id: int, pad_token_id: int):
    from transformers import CLIPConfig
    return CLIPConfig(
        text_config=dict(
            vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
            num_attention_heads=2, max_position_embeddings=77, hidden_act="quick_gelu",
            layer_norm_eps=1e-5, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
            pad_token_id=pad_token_id, projection_dim=16,
        ),
        vision_config=dict(
            image_size=32, patch_size=8, num_channels=3, hidden_size=32, intermediate_size=64,
            num_hidden_layers=2, num_attention_heads=4, hidden_act="quick_gelu", layer_norm_eps=1e-5,
            projection_dim=16,
        ),
        projection_dim=16,
        logit_scale_init_value=2.6592,
    )


def _feat(x):
    """get_*_features returns a tensor (transformers 4.x) or a model output (5.x)."""
    if isinstance(x, torch.Tensor):
        return x
    return x.pooler_output


def build_tiny_clip(vocab_size: int, eos: int, bos: int, pad: int, gen_seed: int):
    from transformers import CLIPModel
    seed(gen_seed)
    cfg = tiny_clip_config(vocab_size, eos, bos, pad)
    model = CLIPModel(cfg)
    model.config._attn_implementation = "eager"
    perturb_(model, torch.Generator().manual_seed(gen_seed + 1))
    round_f16_(model)  # the weights are written in f16; compute from exactly those values
    return model.eval()


def clip_outputs(model, input_ids, pixel_values) -> dict:
    with torch.no_grad():
        t = model.text_model(input_ids=input_ids)
        v = model.vision_model(pixel_values=pixel_values)
        text_embeds = _feat(model.get_text_features(input_ids=input_ids))
        image_embeds = _feat(model.get_image_features(pixel_values=pixel_values))
        # cross-check against the documented formula
        ref_t = model.text_projection(t.pooler_output)
        ref_v = model.visual_projection(v.pooler_output)
        assert torch.allclose(text_embeds, ref_t, atol=1e-6)
        assert torch.allclose(image_embeds, ref_v, atol=1e-6)
    return dict(text_embeds=text_embeds, image_embeds=image_embeds,
                text_hidden=t.last_hidden_state, vision_pooled=v.pooler_output,
                text_pooled=t.pooler_output)


def load_clip_f32(path: Path):
    """The model as written: f16 weights widened to float32 (config.json says
    float32, so dtype="auto" would give float32 too; be explicit)."""
    from transformers import CLIPModel
    m = CLIPModel.from_pretrained(str(path), attn_implementation="eager", dtype=torch.float32)
    assert all(p.dtype == torch.float32 for p in m.parameters())
    return m.eval()


def load_tiny_clip():
    return load_clip_f32(FIX / "clip-tiny")


def rewrite_safetensors_f16(path: Path) -> None:
    """Rewrite a save_pretrained model.safetensors with every float tensor in
    float16, keeping its exact tensor names and metadata ({"format": "pt"})."""
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    save_file(dict(f16_state(tensors)), str(path), metadata=meta)


def make_clip() -> None:
    import open_clip

    # --- clip-tiny (safetensors) ---
    out = FIX / "clip-tiny"
    out.mkdir(parents=True, exist_ok=True)
    model = build_tiny_clip(49408, eos=49407, bos=49406, pad=1, gen_seed=100)
    # config.json as save_pretrained writes it for the float32 model ("dtype": "float32");
    # model.safetensors then rewritten with the same names in float16 (dtype F16).
    model.save_pretrained(str(out), safe_serialization=True)
    assert sorted(p.name for p in out.glob("model*.safetensors")) == ["model.safetensors"]  # one shard
    rewrite_safetensors_f16(out / "model.safetensors")
    shutil.copy(FIX / "tokenizer" / "tokenizer.json", out / "tokenizer.json")
    in_memory = model
    model = load_tiny_clip()  # what was written, not what is in memory
    assert_same_params(in_memory, model)

    input_ids = open_clip.tokenize(CLIP_PROMPTS)
    eot_pos = (input_ids == 49407).int().argmax(-1)
    assert torch.equal(eot_pos, input_ids.argmax(-1))
    g = seed(101)
    pixel_values = torch.randn(3, 3, 32, 32, generator=g)
    o = clip_outputs(model, input_ids, pixel_values)
    # pooled at the eot token
    ref = o["text_hidden"][torch.arange(4), eot_pos]
    assert torch.allclose(ref, o["text_pooled"])
    save_st(out / "expected.safetensors", dict(
        input_ids=input_ids, text_embeds=o["text_embeds"], pixel_values=pixel_values,
        image_embeds=o["image_embeds"], logit_scale=model.logit_scale.detach().reshape(()),
        text_hidden=o["text_hidden"], vision_pooled=o["vision_pooled"],
    ))
    write_json(out / "expected.json", {
        "prompts": CLIP_PROMPTS,
        "eot_positions": eot_pos.tolist(),
        "notes": "text_embeds/image_embeds are projected and NOT normalised. text_hidden is "
                 "last_hidden_state after final_layer_norm; vision_pooled is pooler_output "
                 "(CLS token after post_layernorm). Text pooling is at the eot token 49407 "
                 "(config eos_token_id=49407; it is also argmax(input_ids)).",
    })

    # --- clip-tiny-bin (pytorch_model.bin, vocab 1024) ---
    out = FIX / "clip-tiny-bin"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # eos_token_id=2 is the legacy value the published openai configs carry:
    # transformers then pools at argmax(input_ids), i.e. at the eot id 1023.
    model = build_tiny_clip(1024, eos=2, bos=0, pad=1, gen_seed=200)
    model.save_pretrained(str(out))  # config.json (+ a safetensors file, replaced below)
    for f in out.glob("*.safetensors"):
        f.unlink()
    # pytorch_model.bin as transformers 4.x save_pretrained(safe_serialization=False)
    # wrote it: torch.save (zip format) of the state dict. Like the published
    # openai/clip-vit-* .bin files it also carries the int64 position_ids buffers,
    # which a loader must skip.
    # The float weights are stored in float16 (HalfStorage); position_ids stay int64.
    sd = OrderedDict()
    for k, v in f16_state(model.state_dict()).items():
        sd[k] = v
        if k == "text_model.embeddings.position_embedding.weight":
            sd["text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
        if k == "vision_model.embeddings.position_embedding.weight":
            sd["vision_model.embeddings.position_ids"] = torch.arange(17).unsqueeze(0)
    assert len(sd) == len(model.state_dict()) + 2
    assert all(v.dtype == (torch.int64 if k.endswith("position_ids") else torch.float16) for k, v in sd.items())
    torch.save(sd, str(out / "pytorch_model.bin"))
    assert not list(out.glob("*.safetensors"))
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "pytorch_model.bin"], list(out.iterdir())

    in_memory = model
    model = load_clip_f32(out)
    assert_same_params(in_memory, model)
    ids = open_clip.tokenize(CLIP_PROMPTS[:2])
    # map into a 1024 vocab: sot -> 1022, eot -> 1023 (the max, so argmax pools
    # there), other tokens -> 1 + id % 1000, padding stays 0.
    mapped = torch.where(ids == 49406, torch.full_like(ids, 1022),
                         torch.where(ids == 49407, torch.full_like(ids, 1023),
                                     torch.where(ids == 0, ids, 1 + ids % 1000)))
    assert int(mapped.max()) == 1023
    assert torch.equal(mapped.argmax(-1), (mapped == 1023).int().argmax(-1))
    g = seed(201)
    pixel_values = torch.randn(2, 3, 32, 32, generator=g)
    o = clip_outputs(model, mapped, pixel_values)
    save_st(out / "expected.safetensors", dict(
        input_ids=mapped, pixel_values=pixel_values, image_embeds=o["image_embeds"],
        text_embeds=o["text_embeds"], text_hidden=o["text_hidden"], vision_pooled=o["vision_pooled"],
        logit_scale=model.logit_scale.detach().reshape(()),
    ))
    write_json(out / "expected.json", {
        "prompts": CLIP_PROMPTS[:2],
        "notes": "input_ids are open_clip ids of the prompts mapped into vocab 1024: "
                 "sot 49406 -> 1022, eot 49407 -> 1023, pad 0 stays 0, others -> 1 + id % 1000. "
                 "config text_config.eos_token_id = 2 (legacy, as the published openai configs), "
                 "so transformers pools at argmax(input_ids) = the 1023 token.",
    })
    print("clip: done")


# ---------------------------------------------------------------------------
# 3. tiny VQGAN
# ---------------------------------------------------------------------------

def ddconfig_yaml(indent: str, ch_mult: list, attn_resolutions: list, ch: int = 32, z_channels: int = 8,
                  resolution: int = 32, in_ch: int = 3, out_ch: int = 3, num_res_blocks: int = 1) -> str:
    lines = ["ddconfig:", "  double_z: false", f"  z_channels: {z_channels}", f"  resolution: {resolution}",
             f"  in_channels: {in_ch}", f"  out_ch: {out_ch}", f"  ch: {ch}", "  ch_mult:"]
    lines += [f"  - {m}" for m in ch_mult]
    lines += [f"  num_res_blocks: {num_res_blocks}"]
    if attn_resolutions:
        lines += ["  attn_resolutions:"] + [f"  - {r}" for r in attn_resolutions]
    else:
        lines += ["  attn_resolutions: []"]
    lines += ["  dropout: 0.0"]
    return "".join(indent + l + "\n" for l in lines)


# vqgan-tiny: three levels (two downsamples, f4), attention at 8x8, z [B,8,8,8].
TINY_DDCONFIG_YAML = ddconfig_yaml("    ", [1, 1, 2], [8])
# vqgan-tiny-gumbel and net2net-tiny's first stage: two levels (one downsample,
# f2), still a channel-changing block (32 -> 64, nin_shortcut), a downsample, an
# upsample and attention (at 16x16); z [B,8,16,16].
SMALL_DDCONFIG_YAML = ddconfig_yaml("    ", [1, 2], [16])

VQGAN_TINY_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.VQModel
  params:
    embed_dim: 8
    n_embed: 64
    monitor: val/rec_loss
""" + TINY_DDCONFIG_YAML + """\
    lossconfig:
      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
      params:
        disc_conditional: false
        disc_in_channels: 3
        disc_start: 0
        disc_weight: 0.75
        codebook_weight: 1.0
"""

GUMBEL_TINY_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 8
    n_embed: 64
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params:
        warm_up_steps: 0
        max_decay_steps: 1000001
        lr_start: 0.9
        lr_max: 0.9
        lr_min: 1.0e-06
""" + SMALL_DDCONFIG_YAML + """\
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""

# A tiny segmentation-conditioned Net2NetTransformer (sflckr / coco layout).
# The first stage is its own small VQModel (SMALL_DDCONFIG_YAML). The cond stage
# is a real but minimal VQModel (ch 32 is the least GroupNorm(32) allows, one
# level, no res blocks: conv_in, mid block, conv_out and back) and the GPT is one
# 16-wide layer: only the first stage is ever evaluated, the rest is there so
# the checkpoint has every part a real Net2Net one has.
NET2NET_TINY_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.cond_transformer.Net2NetTransformer
  params:
    cond_stage_key: segmentation
    transformer_config:
      target: taming.modules.transformer.mingpt.GPT
      params:
        vocab_size: 64
        block_size: 128
        n_layer: 1
        n_head: 2
        n_embd: 16
    first_stage_config:
      target: taming.models.vqgan.VQModel
      params:
        embed_dim: 8
        n_embed: 64
        monitor: val/rec_loss
""" + ddconfig_yaml("        ", [1, 2], [16]) + """\
        lossconfig:
          target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator
          params:
            disc_conditional: false
            disc_in_channels: 3
            disc_start: 0
            disc_weight: 0.75
            codebook_weight: 1.0
    cond_stage_config:
      target: taming.models.vqgan.VQModel
      params:
        embed_dim: 4
        n_embed: 16
        image_key: segmentation
""" + ddconfig_yaml("        ", [1], [], z_channels=4, in_ch=5, out_ch=5, num_res_blocks=0) + """\
        lossconfig:
          target: taming.modules.losses.DummyLoss
"""

# Smallest accepted gap between the best and second-best code (squared distance
# for VectorQuantizer2, logit for GumbelQuantize), so that an independent float32
# implementation, whose h differs by ~1e-6, picks the same codes. The grad
# fixture's z is given exactly, so it needs less room. The x seeds below were
# picked to clear these; if a change makes one fail, pick another seed for that
# input (the script asserts, never searches).
MIN_VQ_MARGIN = 1e-4
MIN_GUMBEL_MARGIN = 1e-3
MIN_GRAD_VQ_MARGIN = 1e-5


def smooth_image(gen: torch.Generator, b: int) -> torch.Tensor:
    noise = torch.randn(b, 3, 4, 4, generator=gen) * 1.5
    fine = torch.randn(b, 3, 32, 32, generator=gen) * 0.1
    x = F.interpolate(noise, size=(32, 32), mode="bicubic", align_corners=False) + fine
    return torch.tanh(x)


def vq_nearest(quantize, h: torch.Tensor):
    """VectorQuantizer2's own forward, plus the min-distance margin."""
    zq, _, (_, _, idx) = quantize(h)
    b, c, hh, ww = h.shape
    idx = idx.reshape(b, hh, ww)
    zf = h.permute(0, 2, 3, 1).reshape(-1, c)
    e = quantize.embedding.weight
    d = (zf ** 2).sum(1, keepdim=True) + (e ** 2).sum(1) - 2 * zf @ e.t()
    top2 = d.topk(2, dim=1, largest=False).values
    margin = float((top2[:, 1] - top2[:, 0]).min())
    return zq, idx, margin


def perturb_vq(model, gen: torch.Generator) -> None:
    # codebook keeps taming's uniform(-1/n_e, 1/n_e) init (VectorQuantizer2)
    # or nn.Embedding's N(0,1) (GumbelQuantize); everything else gets noise.
    perturb_(model, gen, skip=("quantize.embedding.", "quantize.embed."))


def load_yaml_model_cfg(text: str) -> dict:
    return yaml.safe_load(text)["model"]


def load_ckpt_state(path: Path) -> dict:
    sd = torch.load(str(path), map_location="cpu", weights_only=False)["state_dict"]
    for k, v in sd.items():
        want = torch.int64 if k.endswith("num_batches_tracked") else torch.float16
        assert v.dtype == want, (path, k, v.dtype)
    return sd


def nearest_vq_expected(model, x: torch.Tensor, out: Path, what: str) -> dict:
    """x, h, indices, z_q, decoded, codebook_min/max of a VQModel (VectorQuantizer2)."""
    with torch.no_grad():
        h = model.quant_conv(model.encoder(x))
        z_q, idx, margin = vq_nearest(model.quantize, h)
        dec = model.decode(z_q)
    emb = model.quantize.embedding.weight.detach()
    n_codes = int(idx.unique().numel())
    assert n_codes > 4, (what, idx.unique())
    assert margin >= MIN_VQ_MARGIN, f"{what}: nearest-code margin {margin:.3g} < {MIN_VQ_MARGIN}: change the x seed"
    tensors = dict(x=x, h=h, indices=idx, z_q=z_q, decoded=dec,
                   codebook_min=emb.min(0).values, codebook_max=emb.max(0).values)
    save_st(out / "expected.safetensors", tensors)
    write_json(out / "expected.json", {
        "notes": "h = quant_conv(encoder(x)); indices = argmin of VectorQuantizer2's "
                 "||h||^2 + ||e||^2 - 2 h.e; z_q = embedding[indices] as [B,C,H,W]; "
                 "decoded = post_quant_conv + decoder. codebook_min/max: per channel over codes. "
                 "Weights stored in float16; computed in float32 from exactly those values.",
        "min_distance_margin": margin,
        "distinct_indices": n_codes,
    })
    print(f"{what}: z_q {list(z_q.shape)}, margin {margin:.3g}, {n_codes} codes used")
    return tensors


def make_vqgan() -> None:
    # --- vqgan-tiny (VQModel) ---
    out = FIX / "vqgan-tiny"
    out.mkdir(parents=True, exist_ok=True)
    # no model.safetensors any more: the Rust test exports its own copy from the .ckpt
    (out / "model.safetensors").unlink(missing_ok=True)
    (out / "model.yaml").write_text(VQGAN_TINY_YAML)
    cfg = load_yaml_model_cfg(VQGAN_TINY_YAML)
    seed(300)
    model = instantiate_first_stage(cfg)
    perturb_vq(model, torch.Generator().manual_seed(301))
    round_f16_(model)
    model.eval()
    sd = OrderedDict((k, v.detach().clone()) for k, v in model.state_dict().items())
    assert not any(k.startswith("loss.") for k in sd)
    g = torch.Generator().manual_seed(302)
    full_sd = OrderedDict(sd)
    full_sd.update(fake_loss_entries(g))
    ae_params = [model.quantize.embedding.weight, model.quant_conv.weight, model.quant_conv.bias,
                 model.post_quant_conv.weight, model.post_quant_conv.bias]
    disc_params = [full_sd["loss.discriminator.main.0.weight"], full_sd["loss.discriminator.main.0.bias"]]
    ckpt = lightning_ckpt(full_sd, [ae_params, disc_params], g, hparams=copy.deepcopy(cfg["params"]))
    torch_save_and_check(ckpt, out / "model.ckpt")

    # reload from the checkpoint to be sure expected outputs match what is on disk
    in_memory = model
    model = instantiate_first_stage(cfg)
    missing, unexpected = model.load_state_dict(load_ckpt_state(out / "model.ckpt"), strict=False)
    assert not missing and all(k.startswith("loss.") for k in unexpected), (missing, unexpected)
    assert_same_params(in_memory, model)
    model.eval()
    x = smooth_image(torch.Generator().manual_seed(303), 2)
    nearest_vq_expected(model, x, out, "vqgan-tiny")

    # --- vqgan-tiny-gumbel (GumbelVQ) ---
    outg = FIX / "vqgan-tiny-gumbel"
    outg.mkdir(parents=True, exist_ok=True)
    (outg / "model.yaml").write_text(GUMBEL_TINY_YAML)
    gcfg = load_yaml_model_cfg(GUMBEL_TINY_YAML)
    seed(400)
    gm = instantiate_first_stage(gcfg)
    perturb_vq(gm, torch.Generator().manual_seed(401))
    round_f16_(gm)
    gm.eval()
    gsd = OrderedDict((k, v.detach().clone()) for k, v in gm.state_dict().items())
    assert "quantize.proj.weight" in gsd and "quantize.embed.weight" in gsd
    g = torch.Generator().manual_seed(402)
    full = OrderedDict(gsd)
    full.update(fake_loss_entries(g))
    ckpt = lightning_ckpt(full, [[gm.quantize.embed.weight, gm.quantize.proj.bias],
                                 [full["loss.discriminator.main.0.bias"]]], g,
                          hparams=copy.deepcopy(gcfg["params"]))
    torch_save_and_check(ckpt, outg / "model.ckpt")
    in_memory = gm
    gm = instantiate_first_stage(gcfg)
    missing, unexpected = gm.load_state_dict(load_ckpt_state(outg / "model.ckpt"), strict=False)
    assert not missing and all(k.startswith("loss.") for k in unexpected), (missing, unexpected)
    assert_same_params(in_memory, gm)
    gm.eval()
    # seed picked for a clear argmax everywhere (MIN_GUMBEL_MARGIN)
    xg = smooth_image(torch.Generator().manual_seed(476), 2)
    with torch.no_grad():
        h = gm.quant_conv(gm.encoder(xg))
        logits = gm.quantize.proj(h)
        idx = logits.argmax(1)
        top2 = logits.topk(2, dim=1).values
        gmargin = float((top2[:, 0] - top2[:, 1]).min())
        z_q = gm.quantize.embed.weight[idx].permute(0, 3, 1, 2).contiguous()
        # same contraction GumbelQuantize does with its hard one-hot
        one_hot = F.one_hot(idx, gm.quantize.n_embed).permute(0, 3, 1, 2).to(h.dtype)
        zq_mod = torch.einsum("bnhw,nd->bdhw", one_hot, gm.quantize.embed.weight)
        assert torch.allclose(zq_mod, z_q, atol=1e-6)
        dec = gm.decode(z_q)
    n_codes = int(idx.unique().numel())
    assert n_codes > 4, idx.unique()
    assert gmargin >= MIN_GUMBEL_MARGIN, f"gumbel logit margin {gmargin:.3g} < {MIN_GUMBEL_MARGIN}: change the x seed"
    emb = gm.quantize.embed.weight.detach()
    save_st(outg / "expected.safetensors", dict(
        x=xg, h=h, logits=logits, indices=idx, z_q=z_q, decoded=dec,
        codebook_min=emb.min(0).values, codebook_max=emb.max(0).values))
    write_json(outg / "expected.json", {
        "notes": "h = quant_conv(encoder(x)); logits = quantize.proj(h) [B,n_embed,H,W]; "
                 "indices = argmax over logits (hard, noise-free GumbelQuantize); "
                 "z_q = quantize.embed.weight[indices] as [B,C,H,W]; decoded = model.decode(z_q). "
                 "Weights stored in float16; computed in float32 from exactly those values.",
        "min_logit_margin": gmargin,
        "distinct_indices": n_codes,
    })
    print(f"vqgan-tiny-gumbel: z_q {list(z_q.shape)}, logit margin {gmargin:.3g}, {n_codes} codes used")

    # --- net2net-tiny (Net2NetTransformer with its own small first stage) ---
    outn = FIX / "net2net-tiny"
    outn.mkdir(parents=True, exist_ok=True)
    (outn / "model.yaml").write_text(NET2NET_TINY_YAML)
    ncfg = load_yaml_model_cfg(NET2NET_TINY_YAML)
    ncfg_inst = copy.deepcopy(ncfg)
    ncfg_inst["params"]["first_stage_config"]["params"]["lossconfig"] = DUMMY_LOSS
    ncfg_inst["params"]["cond_stage_config"]["params"]["lossconfig"] = DUMMY_LOSS
    _, _, inst = taming()
    seed(500)
    net = inst(ncfg_inst)
    perturb_vq(net.first_stage_model, torch.Generator().manual_seed(504))
    perturb_(net.cond_stage_model, torch.Generator().manual_seed(501))
    perturb_(net.transformer, torch.Generator().manual_seed(502))
    round_f16_(net)
    nsd = OrderedDict((k, v.detach().clone()) for k, v in net.state_dict().items())
    assert all(any(k.startswith(p) for k in nsd)
               for p in ("first_stage_model.", "cond_stage_model.", "transformer."))
    g = torch.Generator().manual_seed(503)
    # Net2NetTransformer.configure_optimizers returns one AdamW; a few small tensors stand in.
    ckpt = lightning_ckpt(nsd, [[net.transformer.ln_f.weight, net.transformer.ln_f.bias,
                                 net.transformer.head.weight]], g,
                          hparams=copy.deepcopy(ncfg["params"]))
    torch_save_and_check(ckpt, outn / "model.ckpt")
    full = load_ckpt_state(outn / "model.ckpt")
    net2 = inst(ncfg_inst)
    net2.load_state_dict(full)  # strict: the yaml and the checkpoint agree on every part
    assert_same_params(net, net2)
    fs = instantiate_first_stage(ncfg["params"]["first_stage_config"])
    fs.load_state_dict({k[len("first_stage_model."):]: v for k, v in full.items()
                        if k.startswith("first_stage_model.")})
    assert_same_params(net.first_stage_model, fs)
    fs.eval()
    # seed picked for a clear nearest code at all 512 positions (MIN_VQ_MARGIN)
    xn = smooth_image(torch.Generator().manual_seed(1396), 2)
    n2n = nearest_vq_expected(fs, xn, outn, "net2net-tiny")
    assert list(n2n["z_q"].shape) == [2, 8, 16, 16], n2n["z_q"].shape


# ---------------------------------------------------------------------------
# 4. gradient through decoder -> CLIP
# ---------------------------------------------------------------------------

def spherical_loss(e: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    # e [1,D], t [P,D], both normalised
    return (e - t).norm(dim=-1).div(2).arcsin().pow(2).mul(2).mean()


def make_grad() -> None:
    import open_clip
    cfg = load_yaml_model_cfg((FIX / "vqgan-tiny" / "model.yaml").read_text())
    vq = instantiate_first_stage(cfg)
    # f16 weights widened to f32 (load_state_dict copies into the float32 parameters)
    missing, unexpected = vq.load_state_dict(load_ckpt_state(FIX / "vqgan-tiny" / "model.ckpt"), strict=False)
    assert not missing and all(k.startswith("loss.") for k in unexpected), (missing, unexpected)
    assert all(p.dtype == torch.float32 for p in vq.parameters())
    vq.eval()
    clip = load_tiny_clip()
    for p in list(vq.parameters()) + list(clip.parameters()):
        p.requires_grad_(False)

    ids = open_clip.tokenize(CLIP_PROMPTS[:2])
    with torch.no_grad():
        t = F.normalize(_feat(clip.get_text_features(input_ids=ids)), dim=-1)
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)

    g = seed(600)
    z = (torch.randn(1, 8, 8, 8, generator=g) * 0.1).requires_grad_(True)
    zq_hard, idx, margin = vq_nearest(vq.quantize, z.detach())
    assert margin >= MIN_GRAD_VQ_MARGIN, f"grad: nearest-code margin {margin:.3g} < {MIN_GRAD_VQ_MARGIN}: change the z seed"
    z_q = z + (zq_hard - z).detach()
    out = vq.decode(z_q)
    img = (out + 1) / 2
    img = (img - mean) / std
    e = F.normalize(_feat(clip.get_image_features(pixel_values=img)), dim=-1)
    loss = spherical_loss(e, t)
    loss.backward()
    grad_z = z.grad.detach().clone()

    px = img.detach().clone().requires_grad_(True)
    e2 = F.normalize(_feat(clip.get_image_features(pixel_values=px)), dim=-1)
    loss2 = spherical_loss(e2, t)
    loss2.backward()
    assert torch.allclose(loss2, loss)

    save_st(FIX / "grad" / "expected.safetensors", dict(
        z=z.detach(), indices=idx, loss=loss.detach().reshape(()), grad_z=grad_z,
        image_embed=e.detach(), text_embeds=t, pixels=img.detach(), grad_pixels=px.grad.detach(),
    ))
    write_json(FIX / "grad" / "expected.json", {
        "prompts": CLIP_PROMPTS[:2],
        "models": ["vqgan-tiny/model.ckpt", "clip-tiny"],
        "notes": "z_q = z + (nearest_code(z) - z).detach(); out = decode(z_q); "
                 "pixels = ((out+1)/2 - mean)/std; image_embed = normalize(clip image features); "
                 "text_embeds = normalize(clip text features of prompts 0,1); "
                 "loss = mean_p 2*arcsin(||e - t_p||/2)^2. grad_z = dloss/dz; "
                 "grad_pixels = dloss/dpixels through CLIP alone. Computed in float32 on CPU "
                 "from the float16-stored weights of both models (widened to float32).",
        "clip_mean": CLIP_MEAN, "clip_std": CLIP_STD,
        "vq_min_distance_margin": margin,
    })
    print(f"grad: loss {loss.item():.6f}, |grad_z| {grad_z.norm():.3g}")


# ---------------------------------------------------------------------------
# 5. full-size shape manifests
# ---------------------------------------------------------------------------

_HF_TEXT_LEGACY = {
    "_name_or_path": "", "add_cross_attention": False, "architectures": None,
    "attention_dropout": 0.0, "bad_words_ids": None, "bos_token_id": 0,
    "chunk_size_feed_forward": 0, "cross_attention_hidden_size": None,
    "decoder_start_token_id": None, "diversity_penalty": 0.0, "do_sample": False,
    "dropout": 0.0, "early_stopping": False, "encoder_no_repeat_ngram_size": 0,
    "eos_token_id": 2, "finetuning_task": None, "forced_bos_token_id": None,
    "forced_eos_token_id": None, "hidden_act": "quick_gelu",
    "id2label": {"0": "LABEL_0", "1": "LABEL_1"}, "initializer_factor": 1.0,
    "initializer_range": 0.02, "is_decoder": False, "is_encoder_decoder": False,
    "label2id": {"LABEL_0": 0, "LABEL_1": 1}, "layer_norm_eps": 1e-05,
    "length_penalty": 1.0, "max_length": 20, "max_position_embeddings": 77,
    "min_length": 0, "model_type": "clip_text_model", "no_repeat_ngram_size": 0,
    "num_beam_groups": 1, "num_beams": 1, "num_return_sequences": 1,
    "output_attentions": False, "output_hidden_states": False, "output_scores": False,
    "pad_token_id": 1, "prefix": None, "problem_type": None, "pruned_heads": {},
    "remove_invalid_values": False, "repetition_penalty": 1.0, "return_dict": True,
    "return_dict_in_generate": False, "sep_token_id": None, "task_specific_params": None,
    "temperature": 1.0, "tie_encoder_decoder": False, "tie_word_embeddings": True,
    "tokenizer_class": None, "top_k": 50, "top_p": 1.0, "torch_dtype": None,
    "torchscript": False, "transformers_version": "4.16.0.dev0", "use_bfloat16": False,
    "vocab_size": 49408,
}

_HF_VISION_LEGACY = {k: v for k, v in _HF_TEXT_LEGACY.items()
                     if k not in ("vocab_size", "max_position_embeddings", "bos_token_id",
                                  "eos_token_id", "pad_token_id")}
_HF_VISION_LEGACY.update({"bos_token_id": None, "eos_token_id": None, "pad_token_id": None,
                          "model_type": "clip_vision_model", "image_size": 224, "num_channels": 3})


def hf_clip_config(name, proj, text, vision, patch, with_dicts=False) -> dict:
    tc = dict(_HF_TEXT_LEGACY)
    tc.update(hidden_size=text[0], num_hidden_layers=text[1], num_attention_heads=text[2],
              intermediate_size=4 * text[0], projection_dim=proj)
    vc = dict(_HF_VISION_LEGACY)
    vc.update(hidden_size=vision[0], num_hidden_layers=vision[1], num_attention_heads=vision[2],
              intermediate_size=4 * vision[0], patch_size=patch, projection_dim=proj)
    tc = dict(sorted(tc.items()))
    vc = dict(sorted(vc.items()))
    cfg = {
        "_name_or_path": name,
        "architectures": ["CLIPModel"],
        "initializer_factor": 1.0,
        "logit_scale_init_value": 2.6592,
        "model_type": "clip",
        "projection_dim": proj,
        "text_config": tc,
        "text_config_dict": None,
        "torch_dtype": "float32",
        "transformers_version": None,
        "vision_config": vc,
        "vision_config_dict": None,
    }
    if with_dicts:
        # clip-vit-large-patch14's config.json also carries the *_config_dict
        # overrides (a loader must read text_config / vision_config).
        cfg["text_config_dict"] = {"hidden_size": text[0], "intermediate_size": 4 * text[0],
                                   "num_attention_heads": text[2], "num_hidden_layers": text[1],
                                   "projection_dim": proj}
        cfg["vision_config_dict"] = {"hidden_size": vision[0], "intermediate_size": 4 * vision[0],
                                     "num_attention_heads": vision[2], "num_hidden_layers": vision[1],
                                     "patch_size": patch, "projection_dim": proj}
    return cfg


CLIP_REAL = {
    "clip-vit-b-32": hf_clip_config("openai/clip-vit-base-patch32", 512, (512, 12, 8), (768, 12, 12), 32),
    "clip-vit-b-16": hf_clip_config("openai/clip-vit-base-patch16", 512, (512, 12, 8), (768, 12, 12), 16),
    "clip-vit-l-14": hf_clip_config("openai/clip-vit-large-patch14", 768, (768, 12, 12), (1024, 24, 16), 14,
                                    with_dicts=True),
}


def _f16_ddconfig(indent: str, in_ch: int = 3, out_ch: int = 3) -> str:
    lines = ["ddconfig:", "  double_z: false", "  z_channels: 256", "  resolution: 256",
             f"  in_channels: {in_ch}", f"  out_ch: {out_ch}", "  ch: 128", "  ch_mult:",
             "  - 1", "  - 1", "  - 2", "  - 2", "  - 4", "  num_res_blocks: 2",
             "  attn_resolutions:", "  - 16", "  dropout: 0.0"]
    return "".join(indent + l + "\n" for l in lines)


def _imagenet_yaml(n_embed: int, disc_start: int, disc_weight: float, extra_loss: str = "") -> str:
    return ("model:\n"
            "  base_learning_rate: 4.5e-06\n"
            "  target: taming.models.vqgan.VQModel\n"
            "  params:\n"
            "    embed_dim: 256\n"
            f"    n_embed: {n_embed}\n"
            "    monitor: val/rec_loss\n"
            + _f16_ddconfig("    ") +
            "    lossconfig:\n"
            "      target: taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator\n"
            "      params:\n"
            "        disc_conditional: false\n"
            "        disc_in_channels: 3\n"
            f"        disc_start: {disc_start}\n"
            f"        disc_weight: {disc_weight}\n"
            + extra_loss +
            "        codebook_weight: 1.0\n")


_IMAGENET_DATA = """\
data:
  target: main.DataModuleFromConfig
  params:
    batch_size: 12
    num_workers: 24
    train:
      target: taming.data.imagenet.ImageNetTrain
      params:
        config:
          size: 256
    validation:
      target: taming.data.imagenet.ImageNetValidation
      params:
        config:
          size: 256
"""

_WIKIART_DATA = """\
data:
  target: main.DataModuleFromConfig
  params:
    batch_size: 3
    num_workers: 8
    train:
      target: taming.data.custom.CustomTrain
      params:
        training_images_list_file: wikiart_train.txt
        size: 256
    validation:
      target: taming.data.custom.CustomTest
      params:
        test_images_list_file: wikiart_test.txt
        size: 256
"""

OPENIMAGES_F8_YAML = """\
model:
  base_learning_rate: 4.5e-06
  target: taming.models.vqgan.GumbelVQ
  params:
    kl_weight: 1.0e-08
    embed_dim: 256
    n_embed: 8192
    monitor: val/rec_loss
    temperature_scheduler_config:
      target: taming.lr_scheduler.LambdaWarmUpCosineScheduler
      params:
        warm_up_steps: 0
        max_decay_steps: 1000001
        lr_start: 0.9
        lr_max: 0.9
        lr_min: 1.0e-06
    ddconfig:
      double_z: false
      z_channels: 256
      resolution: 256
      in_channels: 3
      out_ch: 3
      ch: 128
      ch_mult:
      - 1
      - 1
      - 2
      - 4
      num_res_blocks: 2
      attn_resolutions:
      - 32
      dropout: 0.0
    lossconfig:
      target: taming.modules.losses.vqperceptual.DummyLoss
"""


def _net2net_yaml(cond_key: str, vocab: int, block: int, n_layer: int, n_head: int, n_embd: int,
                  n_embed: int, cond_stage: str, first_ckpt: str = "") -> str:
    return ("model:\n"
            "  base_learning_rate: 4.5e-06\n"
            "  target: taming.models.cond_transformer.Net2NetTransformer\n"
            "  params:\n"
            f"    cond_stage_key: {cond_key}\n"
            "    transformer_config:\n"
            "      target: taming.modules.transformer.mingpt.GPT\n"
            "      params:\n"
            f"        vocab_size: {vocab}\n"
            f"        block_size: {block}\n"
            f"        n_layer: {n_layer}\n"
            f"        n_head: {n_head}\n"
            f"        n_embd: {n_embd}\n"
            "    first_stage_config:\n"
            "      target: taming.models.vqgan.VQModel\n"
            "      params:\n"
            + first_ckpt +
            "        embed_dim: 256\n"
            f"        n_embed: {n_embed}\n"
            + _f16_ddconfig("        ") +
            "        lossconfig:\n"
            "          target: taming.modules.losses.DummyLoss\n"
            "    cond_stage_config:\n"
            + cond_stage)


def _seg_cond_stage(n_labels: int, target: str, extra: str = "") -> str:
    return ("      target: " + target + "\n"
            "      params:\n"
            "        embed_dim: 256\n"
            "        n_embed: 1024\n"
            "        image_key: segmentation\n"
            + extra
            + _f16_ddconfig("        ", n_labels, n_labels) +
            "        lossconfig:\n"
            "          target: taming.modules.losses.DummyLoss\n")


VQGAN_REAL = {
    "vqgan-imagenet-f16-1024": ("vqgan", _imagenet_yaml(1024, 250001, 0.8) + _IMAGENET_DATA),
    "vqgan-imagenet-f16-16384": ("vqgan", _imagenet_yaml(16384, 0, 0.75, "        disc_num_layers: 2\n")
                                 + _IMAGENET_DATA),
    "vqgan-wikiart-f16-1024": ("vqgan", _imagenet_yaml(1024, 0, 0.75) + _WIKIART_DATA),
    "vqgan-wikiart-f16-16384": ("vqgan", _imagenet_yaml(16384, 0, 0.75, "        disc_num_layers: 2\n")
                                + _WIKIART_DATA),
    "vqgan-openimages-f8-8192": ("vqgan", OPENIMAGES_F8_YAML),
    "coco": ("net2net", _net2net_yaml(
        "segmentation", 8192, 512, 32, 16, 1024, 8192,
        _seg_cond_stage(183, "taming.models.vqgan.VQModel"))),
    "faceshq": ("net2net", _net2net_yaml(
        "coord", 1024, 512, 24, 16, 1024, 1024,
        "      target: taming.modules.misc.coord.CoordStage\n"
        "      params:\n"
        "        n_embed: 1024\n"
        "        down_factor: 16\n",
        first_ckpt="        ckpt_path: logs/2020-11-09T13-33-36_faceshq_vqgan/checkpoints/last.ckpt\n")),
    "sflckr": ("net2net", _net2net_yaml(
        "segmentation", 1024, 512, 24, 16, 1024, 1024,
        _seg_cond_stage(182, "taming.models.vqgan.VQSegmentationModel", "        n_labels: 182\n"))),
}


def make_manifests() -> None:
    from transformers import CLIPConfig, CLIPModel
    out = FIX / "manifests"
    out.mkdir(parents=True, exist_ok=True)
    index = []
    for name, cfg in CLIP_REAL.items():
        write_json(out / f"{name}.config.json", cfg)
        conf = CLIPConfig(text_config=cfg["text_config"], vision_config=cfg["vision_config"],
                          projection_dim=cfg["projection_dim"],
                          logit_scale_init_value=cfg["logit_scale_init_value"])
        with torch.device("meta"):
            m = CLIPModel(conf)
        buffers = {n for n, _ in m.named_buffers()}
        tensors = {k: list(v.shape) for k, v in m.state_dict().items() if k not in buffers}
        assert "logit_scale" in tensors and not any("position_ids" in k for k in tensors)
        write_json(out / f"{name}.json", {"name": name, "config": cfg, "tensors": tensors,
                                          "excluded_buffers": sorted(buffers)})
        index.append({"file": f"{name}.json", "kind": "clip", "config_file": f"{name}.config.json"})
        print(f"manifest {name}: {len(tensors)} tensors, "
              f"{sum(int(np.prod(s)) for s in tensors.values()) / 1e6:.1f}M params")
    for name, (kind, text) in VQGAN_REAL.items():
        (out / f"{name}.yaml").write_text(text)
        cfg = yaml.safe_load(text)["model"]
        if kind == "net2net":
            fs_cfg, prefix = cfg["params"]["first_stage_config"], "first_stage_model."
        else:
            fs_cfg, prefix = cfg, ""
        with torch.device("meta"):
            m = instantiate_first_stage(fs_cfg)
        tensors = {prefix + k: list(v.shape) for k, v in m.state_dict().items() if not k.startswith("loss.")}
        write_json(out / f"{name}.json", {"name": name, "model_type": kind, "config": text, "tensors": tensors})
        index.append({"file": f"{name}.json", "kind": "vqgan", "config_file": f"{name}.yaml",
                      "target": cfg["target"]})
        print(f"manifest {name}: {len(tensors)} tensors, "
              f"{sum(int(np.prod(s)) for s in tensors.values()) / 1e6:.1f}M params")
    write_json(out / "index.json", index)


OWN_DIRS = ["tokenizer", "clip-tiny", "clip-tiny-bin", "vqgan-tiny", "vqgan-tiny-gumbel",
            "net2net-tiny", "grad", "manifests"]

SECTIONS = {
    "tokenizer": make_tokenizer,
    "clip": make_clip,
    "vqgan": make_vqgan,
    "grad": make_grad,
    "manifests": make_manifests,
}


def main(argv) -> None:
    wanted = argv or list(SECTIONS)
    for s in wanted:
        if s not in SECTIONS:
            raise SystemExit(f"unknown section {s!r}; choose from {list(SECTIONS)}")
    for s in wanted:
        SECTIONS[s]()
    for d in OWN_DIRS:
        for p in (FIX / d).rglob("*"):
            if p.is_file():
                p.chmod(0o644)  # safetensors writes 0600


if __name__ == "__main__":
    main(sys.argv[1:])
