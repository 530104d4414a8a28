"""The checks of the from-scratch track's parts 5 and 6 (tokenizer, decoding), both ways: the printed
solution and correct code written differently pass; the stub is "not attempted"; each named
misconception, written as a learner would write it, is diagnosed; forbidden shortcuts (also through
an alias) are refused; bad output gets a one-line verdict.

Learner code is written as source text and run in a fresh namespace (`notebook(...)`), as a
notebook would define it: each piece finds its helpers (pretokenize, merge_pair, KVCache,
sample_next) by name in that namespace, exactly as in the capstone."""
import contextlib
import io
import textwrap

import pytest
import torch

from course_lib.checks import (REGISTRY, check_encode_iterable, check_generate_cached, check_pretokenize,
                               check_sample_next, check_tokenizer, check_train_bpe, solution)
from course_lib.checks.track_decoding import ReferenceModel

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted

pytestmark = pytest.mark.usefixtures("quiet_checks")


def printed(name):
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        solution(name)
    return buf.getvalue()


SOLUTION = printed("check_encode_iterable")  # imports, pretokenize, train_bpe (+ helpers), Tokenizer
DECODING = printed("check_generate_cached")  # imports, KVCache, sample_next, generate


def notebook(*cells, base=SOLUTION):
    """Run the solution's cells, then `cells` (which may redefine any of them), in one namespace."""
    ns = {"__name__": "learner_notebook"}
    exec(base, ns)
    for cell in cells:
        exec(textwrap.dedent(cell), ns)
    return ns


def replace(code, old, new):
    assert old in code, old
    return code.replace(old, new)


# ------------------------------------------------------------------ every printed solution passes
@pytest.mark.parametrize("check,name", [(check_pretokenize, "pretokenize"), (check_train_bpe, "train_bpe"),
                                        (check_tokenizer, "Tokenizer"), (check_encode_iterable, "Tokenizer"),
                                        (check_sample_next, "sample_next"), (check_generate_cached, "generate")])
def test_printed_solution_passes(check, name):
    ns = notebook(base=printed(check.__name__))
    result = check(ns[name])
    assert result.passed, result.message + "\n" + result.detail


# ------------------------------------------------------------------ pretokenize
def test_pretokenize_other_correct_ways():
    ns = notebook("""
        SPLIT = regex.compile(GPT2_PATTERN)

        def pretokenize(text):
            return [m.group() for m in SPLIT.finditer(text)]
    """)
    assert check_pretokenize(ns["pretokenize"]).passed


def test_pretokenize_stub_misconception_delegation():
    ns = notebook("""
        def pretokenize(text):
            raise NotImplementedError()
    """)
    assert_not_attempted(check_pretokenize(ns["pretokenize"]))
    ns = notebook("""
        def pretokenize(text):
            return text.split()
    """)
    assert_diagnosed(check_pretokenize(ns["pretokenize"]), "whitespace_split")
    ns = notebook("""
        from course_lib.tokenizers import ByteBPETokenizer

        def pretokenize(text):
            return ByteBPETokenizer()._split.findall(text)
    """)
    assert_delegates(check_pretokenize(ns["pretokenize"]), "course_lib.tokenizers.ByteBPETokenizer")
    ns = notebook("""
        def pretokenize(text):
            return None
    """)
    result = check_pretokenize(ns["pretokenize"])
    assert not result.passed and "forget a `return`" in result.message


def test_pretokenize_all_named_misconceptions_are_tested():
    assert_all_tested("check_pretokenize", {"whitespace_split"})


# ------------------------------------------------------------------ train_bpe
def test_train_bpe_another_correct_way():
    """Every chunk occurrence (not distinct chunks), pairs counted with a Counter over a flat list,
    the tie rule written as a sort: the same merges."""
    ns = notebook("""
        def train_bpe(text, vocab_size, special_tokens=()):
            chunks = []
            for piece in split_special_tokens(text, special_tokens):
                if piece not in special_tokens:
                    chunks += [list(c.encode("utf-8")) for c in pretokenize(piece)]
            names = [bytes([i]) for i in range(256)]
            merges = []
            while len(merges) < vocab_size - 256 - len(special_tokens):
                counts = Counter(p for ids in chunks for p in zip(ids, ids[1:]))
                if not counts:
                    break
                ranked = sorted(counts, key=lambda p: (-counts[p], [-b for b in names[p[0]]] + [1],
                                                       [-b for b in names[p[1]]] + [1], p))
                best = ranked[0]
                merges.append(best)
                names.append(names[best[0]] + names[best[1]])
                chunks = [merge_pair(ids, best, len(names) - 1) for ids in chunks]
            return merges
    """)
    result = check_train_bpe(ns["train_bpe"])
    assert result.passed, result.message + result.detail


TRAIN_MISTAKES = {
    "no_pretokenization": ("            chunk_counts.update(pretokenize(piece))",
                           "            chunk_counts.update([piece])"),
    "specials_trained": ("    for piece in split_special_tokens(text, special_tokens):\n        if piece not in special_tokens:",
                         "    for piece in [text]:\n        if True:"),
    "tie_rule": ("        best = max(pair_counts, key=lambda p: (pair_counts[p], vocab[p[0]], vocab[p[1]], -p[0], -p[1]))",
                 "        best = max(pair_counts, key=pair_counts.get)"),
    "overlap_count": ("            for pair in zip(ids, ids[1:]):  # overlapping pairs count: \"aaa\" has (a, a) twice\n"
                      "                pair_counts[pair] += freq",
                      "            for pair in set(zip(ids, ids[1:])):\n"
                      "                pair_counts[pair] += freq * (len(ids) - len(merge_pair(ids, pair, -1)))"),
    "special_ids_not_reserved": ("    n_merges = vocab_size - 256 - len(special_tokens)",
                                 "    n_merges = vocab_size - 256"),
}


@pytest.mark.parametrize("key", TRAIN_MISTAKES)
def test_train_bpe_diagnoses(key):
    ns = notebook(replace(SOLUTION, *TRAIN_MISTAKES[key]), base="")
    assert_diagnosed(check_train_bpe(ns["train_bpe"]), key)


def test_train_bpe_tie_rule_smaller_bytes_is_a_tie_too():
    ns = notebook(replace(SOLUTION, TRAIN_MISTAKES["tie_rule"][0],
                          "        best = min(pair_counts, key=lambda p: (-pair_counts[p], vocab[p[0]], vocab[p[1]]))"),
                  base="")
    result = check_train_bpe(ns["train_bpe"])
    assert_diagnosed(result, "tie_rule")
    assert "both occur" in result.detail


def test_train_bpe_all_named_misconceptions_are_tested():
    assert_all_tested("check_train_bpe", TRAIN_MISTAKES)


def test_train_bpe_stub_delegation_and_bad_output():
    ns = notebook("""
        def train_bpe(text, vocab_size, special_tokens=()):
            raise NotImplementedError()
    """)
    assert_not_attempted(check_train_bpe(ns["train_bpe"]))
    ns = notebook("""
        from course_lib.tokenizers import ByteBPETokenizer

        def train_bpe(text, vocab_size, special_tokens=()):
            return ByteBPETokenizer.train(text, vocab_size, list(special_tokens)).merges
    """)
    assert_delegates(check_train_bpe(ns["train_bpe"]), "course_lib.tokenizers.ByteBPETokenizer")
    ns = notebook("""
        from tokenizers import Tokenizer as HFTokenizer, models, trainers

        def train_bpe(text, vocab_size, special_tokens=()):
            tok = HFTokenizer(models.BPE())
            tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab_size))
            return []
    """)
    assert_delegates(check_train_bpe(ns["train_bpe"]), "tokenizers")
    for body, words in [("return {}", "list of (a, b) pairs"), ("return [(1, 2, 3)]", "pair (a, b)"),
                        ("return [('a', 'b')]", "pairs of ints"), ("return 1 / 0", "ZeroDivisionError")]:
        ns = notebook(f"def train_bpe(text, vocab_size, special_tokens=()):\n    {body}\n")
        result = check_train_bpe(ns["train_bpe"])
        assert not result.passed and words in result.message, (body, result.message)


# ------------------------------------------------------------------ Tokenizer: encode / decode
def test_tokenizer_another_correct_way():
    """Every merge applied in the order it was learned (slow but equal), decode through a bytearray."""
    ns = notebook("""
        class Tokenizer(Tokenizer):
            def encode_chunk(self, chunk):
                ids = list(chunk.encode("utf-8"))
                for k, pair in enumerate(self.merges):
                    ids = merge_pair(ids, pair, 256 + k)
                return ids

            def decode(self, ids):
                out = bytearray()
                for i in ids:
                    out += self.vocab[i]
                return bytes(out).decode("utf-8", "replace")
    """)
    result = check_tokenizer(ns["Tokenizer"])
    assert result.passed, result.message + result.detail


ENCODE_MISTAKES = {
    "greedy_longest": """
        class Tokenizer(Tokenizer):
            def encode_chunk(self, chunk):
                data, ids, i = chunk.encode("utf-8"), [], 0
                by_bytes = {b: i for i, b in self.vocab.items()}
                while i < len(data):
                    j = len(data)
                    while data[i:j] not in by_bytes:  # the longest token that fits
                        j -= 1
                    ids.append(by_bytes[data[i:j]])
                    i = j
                return ids
    """,
    "leftmost_pair_first": """
        class Tokenizer(Tokenizer):
            def encode_chunk(self, chunk):
                ids = list(chunk.encode("utf-8"))
                merged = True
                while merged:
                    merged = False
                    for i in range(len(ids) - 1):
                        if (ids[i], ids[i + 1]) in self.ranks:
                            ids[i:i + 2] = [256 + self.ranks[(ids[i], ids[i + 1])]]
                            merged = True
                            break
                return ids
    """,
    "specials_not_split": """
        class Tokenizer(Tokenizer):
            def encode(self, text):
                return [i for chunk in pretokenize(text) for i in self.encode_chunk(chunk)]
    """,
    "no_pretokenization": """
        class Tokenizer(Tokenizer):
            def encode(self, text):
                ids = []
                for piece in split_special_tokens(text, list(self.special_tokens)):
                    if piece in self.special_tokens:
                        ids.append(self.special_tokens[piece])
                    else:
                        ids.extend(self.encode_chunk(piece))
                return ids
    """,
    "decode_per_token": """
        class Tokenizer(Tokenizer):
            def decode(self, ids):
                return "".join(self.vocab[i].decode("utf-8", errors="replace") for i in ids)
    """,
}


@pytest.mark.parametrize("key", ENCODE_MISTAKES)
def test_tokenizer_diagnoses(key):
    ns = notebook(ENCODE_MISTAKES[key])
    assert_diagnosed(check_tokenizer(ns["Tokenizer"]), key)


def test_tokenizer_all_named_misconceptions_are_tested():
    assert_all_tested("check_tokenizer", ENCODE_MISTAKES)


def test_tokenizer_stub_delegation_alias_and_bad_output():
    ns = notebook("""
        class Tokenizer(Tokenizer):
            def encode(self, text):
                raise NotImplementedError()
    """)
    assert_not_attempted(check_tokenizer(ns["Tokenizer"]))
    ns = notebook("""
        from course_lib import tokenizers as tk
        BPE = tk.ByteBPETokenizer  # an alias at module level

        class Tokenizer(Tokenizer):
            def encode(self, text):
                return BPE(self.merges, list(self.special_tokens)).encode(text)
    """)
    assert_delegates(check_tokenizer(ns["Tokenizer"]), "course_lib.tokenizers.ByteBPETokenizer")
    for body, words in [("return None", "forget a `return`"), ("return 'abc'", "got an element 'a'"),
                        ("return torch.tensor(super().encode(text), dtype=torch.float32)", "got an element"),
                        ("return super().encode(text)[::-1]", "differs from the reference")]:
        ns = notebook(f"import torch\n\nclass Tokenizer(Tokenizer):\n    def encode(self, text):\n        {body}\n")
        result = check_tokenizer(ns["Tokenizer"])
        assert not result.passed and words in result.message, (body, result.message)
    assert "pass the class itself" in check_tokenizer(notebook()["Tokenizer"]([])).message


# ------------------------------------------------------------------ encode_iterable
def test_encode_iterable_another_correct_way():
    """More margin than needed (eight chunks, 64 characters), specials found with str.find: still equal."""
    ns = notebook("""
        class Tokenizer(Tokenizer):
            def encode_settled(self, text):
                safe = max(len(text) - 64, 0)
                done = 0
                for token in self.special_tokens:
                    at = text.find(token)
                    while 0 <= at < safe:
                        done = max(done, at + len(token))
                        at = text.find(token, at + 1)
                ids = self.encode(text[:done])
                chunks = pretokenize(text[done:safe])[:-8]
                for chunk in chunks:
                    ids += self.encode_chunk(chunk)
                return ids, text[done + sum(len(c) for c in chunks):]
    """)
    result = check_encode_iterable(ns["Tokenizer"])
    assert result.passed, result.message + result.detail


ITERABLE_MISTAKES = {
    "encodes_pieces_separately": """
        class Tokenizer(Tokenizer):
            def encode_iterable(self, iterable):
                for line in iterable:
                    yield from self.encode(line)
    """,
    "keeps_back_one_chunk": """
        class Tokenizer(Tokenizer):
            def encode_settled(self, text):
                margin = max(self.longest_special - 1, 0)
                safe = max(len(text) - margin, 0)
                done = 0
                for token in self.special_tokens:
                    at = text.rfind(token, 0, safe + len(token) - 1)
                    if 0 <= at < safe:
                        done = max(done, at + len(token))
                ids = self.encode(text[:done])
                chunks = pretokenize(text[done:safe])[:-1]  # the last chunk may still grow
                for chunk in chunks:
                    ids += self.encode_chunk(chunk)
                return ids, text[done + sum(map(len, chunks)):]
    """,
    "special_token_straddles": """
        class Tokenizer(Tokenizer):
            def encode_settled(self, text):
                done = 0
                for token in self.special_tokens:
                    at = text.rfind(token)
                    if at >= 0:
                        done = max(done, at + len(token))
                ids = self.encode(text[:done])
                chunks = pretokenize(text[done:])[:-2]
                for chunk in chunks:
                    ids += self.encode_chunk(chunk)
                return ids, text[done + sum(map(len, chunks)):]
    """,
    "not_lazy": """
        class Tokenizer(Tokenizer):
            def encode_iterable(self, iterable):
                text = "".join(iterable)
                yield from self.encode(text)
    """,
}


@pytest.mark.parametrize("key", ITERABLE_MISTAKES)
def test_encode_iterable_diagnoses(key):
    ns = notebook(ITERABLE_MISTAKES[key])
    assert_diagnosed(check_encode_iterable(ns["Tokenizer"]), key)


def test_encode_iterable_all_named_misconceptions_are_tested():
    assert_all_tested("check_encode_iterable", ITERABLE_MISTAKES)


def test_encode_iterable_not_lazy_also_when_ids_are_collected_first():
    ns = notebook("""
        class Tokenizer(Tokenizer):
            def encode_iterable(self, iterable):
                ids = []
                for line in iterable:
                    ids.append(line)
                return iter(self.encode("".join(ids)))
    """)
    result = check_encode_iterable(ns["Tokenizer"])
    assert_diagnosed(result, "not_lazy")
    assert "before its first id" in result.message


def test_encode_iterable_stub_delegation_and_bad_output():
    ns = notebook("""
        class Tokenizer(Tokenizer):
            def encode_iterable(self, iterable):
                raise NotImplementedError()
    """)
    assert_not_attempted(check_encode_iterable(ns["Tokenizer"]))
    ns = notebook("""
        import course_lib.tokenizers

        class Tokenizer(Tokenizer):
            def encode_iterable(self, iterable):
                library = course_lib.tokenizers.ByteBPETokenizer(self.merges, list(self.special_tokens))
                return library.encode_iterable(iterable)
    """)
    assert_delegates(check_encode_iterable(ns["Tokenizer"]), "course_lib.tokenizers.ByteBPETokenizer")
    ns = notebook("""
        class Tokenizer(Tokenizer):
            def encode_iterable(self, iterable):
                return None
    """)
    assert "iterator of ids" in check_encode_iterable(ns["Tokenizer"]).message
    ns = notebook("""
        class Tokenizer(Tokenizer):
            def encode_iterable(self, iterable):
                for line in iterable:
                    yield line
    """)
    assert "got an element" in check_encode_iterable(ns["Tokenizer"]).message


# ------------------------------------------------------------------ sample_next
def test_sample_next_other_correct_ways():
    """Filters in probability space with renormalisation, float64, top-p before top-k, p ** (1/T)."""
    ns = notebook("""
        def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
            if temperature == 0:
                return torch.argmax(logits, dim=1)
            probs = torch.softmax(logits.double(), dim=-1) ** (1.0 / temperature)  # = softmax(logits / T), unnormalised
            probs = probs / probs.sum(-1, keepdim=True)
            if top_p is not None:
                p_sorted, idx = torch.sort(probs, dim=-1, descending=True)
                keep = torch.cumsum(p_sorted, -1) - p_sorted < top_p
                probs = torch.zeros_like(probs).scatter(-1, idx, p_sorted * keep)
            if top_k is not None:
                values, idx = torch.topk(probs, top_k, dim=-1)
                probs = torch.zeros_like(probs).scatter(-1, idx, values)
            probs = probs / probs.sum(-1, keepdim=True)
            return torch.multinomial(probs, 1, generator=generator)[:, 0]
    """, base=DECODING)
    result = check_sample_next(ns["sample_next"])
    assert result.passed, result.message + result.detail


SAMPLE_MISTAKES = {
    "temperature_after_softmax": ("    logits = logits / temperature  # (B, V): the temperature divides the logits, before softmax\n",
                                  ""),
    "top_k_keeps_k_plus_1": ("        kth_largest = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)",
                             "        kth_largest = logits.sort(dim=-1, descending=True).values[:, top_k:top_k + 1]"),
    "top_p_drops_crossing_token": ("        drop_sorted = before >= top_p  # keeps the token that crosses top_p",
                                   "        drop_sorted = sorted_probs.cumsum(dim=-1) > top_p\n"
                                   "        drop_sorted[:, 0] = False"),
    "ignores_generator": ("    return torch.multinomial(probs, num_samples=1, generator=generator).squeeze(-1)  # (B,)",
                          "    return torch.multinomial(probs, num_samples=1).squeeze(-1)"),
    "greedy_not_argmax": ("    if temperature == 0:\n        return logits.argmax(dim=-1)  # (B,): greedy",
                          "    temperature = temperature or 1.0"),
}


@pytest.mark.parametrize("key", SAMPLE_MISTAKES)
def test_sample_next_diagnoses(key):
    ns = notebook(replace(DECODING, *SAMPLE_MISTAKES[key]), base="")
    assert_diagnosed(check_sample_next(ns["sample_next"]), key)


def test_sample_next_temperature_after_softmax_written_on_probabilities():
    code = replace(DECODING, *SAMPLE_MISTAKES["temperature_after_softmax"])
    ns = notebook(replace(code, "    probs = torch.softmax(logits, dim=-1)  # (B, V)",
                          "    probs = torch.softmax(logits, dim=-1) / temperature"), base="")
    assert_diagnosed(check_sample_next(ns["sample_next"]), "temperature_after_softmax")


def test_sample_next_all_named_misconceptions_are_tested():
    assert_all_tested("check_sample_next", SAMPLE_MISTAKES)


def test_sample_next_stub_delegation_and_bad_output():
    ns = notebook("""
        def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
            raise NotImplementedError()
    """, base=DECODING)
    assert_not_attempted(check_sample_next(ns["sample_next"]))
    ns = notebook("""
        from course_lib.generation import sample_next as library_sample_next

        def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):
            return library_sample_next(logits, temperature, top_k, top_p, generator)
    """, base=DECODING)
    assert_delegates(check_sample_next(ns["sample_next"]), "course_lib.generation.sample_next")
    for body, words in [("return torch.multinomial(torch.softmax(logits, -1), 1, generator=generator)", "(B, 1)"),
                        ("return logits.argmax(-1).float()", "dtype"),
                        ("return logits.argmax(-1) + 100", "outside"),
                        ("return logits.argmax(-1).tolist()", "got list"),
                        ("return logits.div_(max(temperature, 1e-9)).argmax(-1)", "changed the logits")]:
        ns = notebook(f"def sample_next(logits, temperature=1.0, top_k=None, top_p=None, generator=None):\n    {body}\n",
                      base=DECODING)
        result = check_sample_next(ns["sample_next"])
        assert not result.passed and words in result.message, (body, result.message)


# ------------------------------------------------------------------ generate with the learner's KVCache
def test_reference_model_cached_equals_full_and_positions_matter():
    """The check's model: cached decoding (its own cache) equals the full computation, and a token at
    the wrong position changes the greedy tokens (so restarted positions are caught)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: more threads only wait for each other
    try:
        _reference_model_checks()
    finally:
        torch.set_num_threads(threads)


def _reference_model_checks():
    ns = notebook(base=DECODING)
    for window in (None, 4):
        model = ReferenceModel(window=window)
        ids = torch.randint(0, model.vocab_size, (2, 12), generator=torch.Generator().manual_seed(0))
        caches = [ns["KVCache"](window) for _ in model.blocks]
        steps = [model(ids[:, :5], caches=caches)] + [model(ids[:, t:t + 1], caches=caches) for t in range(5, 12)]
        torch.testing.assert_close(torch.cat(steps, 1), model(ids), atol=1e-12, rtol=0)
    model = ReferenceModel()
    ids = torch.randint(0, model.vocab_size, (2, 12), generator=torch.Generator().manual_seed(1))
    shifted = model(ids[:, -1:], caches=None)[:, -1].argmax(-1)  # the last token alone, at position 0
    assert not torch.equal(shifted, model(ids)[:, -1].argmax(-1))


def test_generate_another_correct_way():
    ns = notebook("""
        def generate(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, generator=None,
                     use_cache=True):
            caches = [KVCache(model.window) for _ in model.blocks] if use_cache else None
            out, fresh = ids, ids
            while out.size(1) < ids.size(1) + max_new_tokens:
                with torch.no_grad():
                    logits = model(fresh if use_cache else out, caches=caches)
                nxt = sample_next(logits[:, -1, :], temperature, top_k, top_p, generator)
                out = torch.cat((out, nxt.unsqueeze(1)), dim=1)
                fresh = out[:, -1:]
            return out
    """, base=DECODING)
    result = check_generate_cached(ns["generate"])
    assert result.passed, result.message + result.detail


GENERATE_MISTAKES = {
    "ignores_cache": ("            logits = model(ids[:, -1:], caches=caches)[:, -1]", "            logits = model(ids)[:, -1]"),
    "refeeds_whole_sequence": ("            logits = model(ids[:, -1:], caches=caches)[:, -1]",
                               "            logits = model(ids, caches=caches)[:, -1]"),
    "caches_recreated": ("            logits = model(ids[:, -1:], caches=caches)[:, -1]",
                         "            caches = [KVCache(model.window) for _ in model.blocks]\n"
                         "            logits = model(ids[:, -1:], caches=caches)[:, -1]"),
    "window_not_passed": ("    caches = [KVCache(model.window) for _ in model.blocks] if use_cache else None",
                          "    caches = [KVCache() for _ in model.blocks] if use_cache else None"),
    "off_by_one": ("    for step in range(max_new_tokens):", "    for step in range(max_new_tokens - 1):"),
    "drops_prompt": ("    return ids  # (B, T + max_new_tokens)", "    return ids[:, -max_new_tokens:]"),
    "kv_cache_broken": ("        self.pos += T_new", "        self.pos = T_new"),
}


@pytest.mark.parametrize("key", GENERATE_MISTAKES)
def test_generate_diagnoses(key):
    ns = notebook(replace(DECODING, *GENERATE_MISTAKES[key]), base="")
    assert_diagnosed(check_generate_cached(ns["generate"]), key)


def test_generate_kv_cache_that_returns_only_the_new_keys():
    ns = notebook(replace(DECODING, "        return k, v  # everything the new queries may need, even beyond the window",
                          "        return k[:, :, -T_new:], v[:, :, -T_new:]"), base="")
    result = check_generate_cached(ns["generate"])
    assert_diagnosed(result, "kv_cache_broken")
    assert "check_kv_cache" in result.message


def test_generate_all_named_misconceptions_are_tested():
    assert_all_tested("check_generate_cached", GENERATE_MISTAKES)


def test_generate_stub_delegation_and_bad_output():
    ns = notebook(replace(DECODING, "    caches = [KVCache(model.window) for _ in model.blocks] if use_cache else None",
                          "    raise NotImplementedError()"), base="")
    assert_not_attempted(check_generate_cached(ns["generate"]))
    ns = notebook(replace(DECODING, "    def update(self, k, v):\n", "    def update(self, k, v):\n"
                          "        raise NotImplementedError()\n"), base="")
    result = check_generate_cached(ns["generate"])
    assert_diagnosed(result, "kv_cache_broken")
    assert "not written yet" in result.message
    code = replace(DECODING, "sample_next(logits, temperature, top_k, top_p, generator)",
                   "sample(logits, temperature, top_k, top_p, generator)")
    ns = notebook("import course_lib.generation as G\nsample = G.sample_next\n",  # an alias made beforehand
                  replace(code, "@torch.no_grad()\n", ""), base="")
    assert_delegates(check_generate_cached(ns["generate"]), "course_lib.generation.sample_next")
    for body, words in [("return None", "forget a `return`"),
                        ("return torch.zeros(ids.size(0), ids.size(1) + max_new_tokens)", "dtype torch.int64"),
                        ("return torch.cat([ids, ids.new_zeros(ids.size(0), max_new_tokens)], 1)", "different tokens"),
                        ("return torch.cat([ids.new_zeros(ids.size(0), max_new_tokens), ids], 1)", "start with the prompt"),
                        ("return model(ids, caches=[None, None])", "raised")]:
        ns = notebook("def generate(model, ids, max_new_tokens, temperature=1.0, top_k=None, top_p=None, "
                      f"generator=None, use_cache=True):\n    {body}\n", base=DECODING)
        result = check_generate_cached(ns["generate"])
        assert not result.passed and words in result.message, (body, result.message)


def test_generate_delegation_through_torch_no_grad():
    code = replace(DECODING, "sample_next(logits, temperature, top_k, top_p, generator)",
                   "sample(logits, temperature, top_k, top_p, generator)")
    ns = notebook("import course_lib.generation as G\nsample = G.sample_next\n", code, base="")
    assert_delegates(check_generate_cached(ns["generate"]), "course_lib.generation.sample_next")


def test_checks_are_quick():
    """Each check runs its cases in a few seconds (the learner's code at the solution's speed)."""
    import time
    for check, name in [(check_train_bpe, "train_bpe"), (check_encode_iterable, "Tokenizer"),
                        (check_generate_cached, "generate"), (check_sample_next, "sample_next")]:
        ns = notebook(base=printed(check.__name__))
        t = time.perf_counter()
        assert check(ns[name]).passed
        assert time.perf_counter() - t < 10, check.__name__


def test_registered_with_time_and_forbid_list():
    for name in ("check_pretokenize", "check_train_bpe", "check_tokenizer", "check_encode_iterable",
                 "check_sample_next", "check_generate_cached"):
        spec = REGISTRY[name]
        assert spec.minutes > 0 and "course_lib" in spec.forbid.names and spec.idea and spec.hint
