"""check_bpe_merge, both ways: correct implementations pass, the stub is not attempted, and each
named misconception, written as a learner would write it, is diagnosed."""
import pytest

from course_lib.checks import check_bpe_merge
from course_lib.tokenizers import ByteBPETokenizer, merge_pair

from helpers import assert_all_tested, assert_delegates, assert_diagnosed, assert_not_attempted, solved

pytestmark = pytest.mark.usefixtures("quiet_checks")


def merge_with_index(ids, pair, new_id):  # correct, written another way
    out = list(ids)
    i = 0
    while i < len(out) - 1:
        if (out[i], out[i + 1]) == tuple(pair):
            out[i: i + 2] = [new_id]
        i += 1
    return out


@pytest.mark.parametrize("impl", [solved("check_bpe_merge"), merge_with_index])
def test_accepts_correct(impl):
    assert check_bpe_merge(impl).passed


def merge_import_inside(ids, pair, new_id):
    from course_lib import tokenizers
    return tokenizers.merge_pair(ids, pair, new_id)


def merge_via_tokenizer(ids, pair, new_id):  # the trained tokenizer's own encoder does the merging
    tok = ByteBPETokenizer([tuple(pair)])
    return [new_id if t == 256 else t for t in tok._encode_chunk(bytes(ids))]


@pytest.mark.parametrize("impl,used", [(merge_pair, "course_lib.tokenizers.merge_pair"),
                                       (merge_import_inside, "course_lib.tokenizers.merge_pair"),
                                       (merge_via_tokenizer, "course_lib.tokenizers.ByteBPETokenizer")])
def test_refuses_delegation(impl, used):
    assert_delegates(check_bpe_merge(impl), used)


def test_stub():
    def bpe_merge(ids, pair, new_id):
        raise NotImplementedError()
    assert_not_attempted(check_bpe_merge(bpe_merge))


def no_skip(ids, pair, new_id):
    out = []
    for i in range(len(ids)):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
        else:
            out.append(ids[i])
    return out


def right_to_left(ids, pair, new_id):
    out, i = [], len(ids) - 1
    while i >= 0:
        if i > 0 and (ids[i - 1], ids[i]) == tuple(pair):
            out.insert(0, new_id)
            i -= 2
        else:
            out.insert(0, ids[i])
            i -= 1
    return out


def first_only(ids, pair, new_id):
    s = list(ids)
    for i in range(len(s) - 1):
        if (s[i], s[i + 1]) == tuple(pair):
            return s[:i] + [new_id] + s[i + 2:]
    return s


def in_place(ids, pair, new_id):
    i = 0
    while i < len(ids) - 1:
        if (ids[i], ids[i + 1]) == tuple(pair):
            ids[i: i + 2] = [new_id]
        i += 1
    return ids


@pytest.mark.parametrize("impl,key", [(no_skip, "no_skip"), (right_to_left, "right_to_left"),
                                      (first_only, "first_only"), (in_place, "mutates_input")])
def test_diagnoses(impl, key):
    assert_diagnosed(check_bpe_merge(impl), key)


def test_all_named_misconceptions_are_tested():
    assert_all_tested("check_bpe_merge", {"no_skip", "right_to_left", "first_only", "mutates_input"})


def test_wrong_return_type():
    assert "forget a `return`" in check_bpe_merge(lambda ids, pair, new_id: None).message
