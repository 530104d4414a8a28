"""The real all-MiniLM-L6-v2 in course_lib's BERT, against transformers and sentence-transformers
loaded from the same local files (offline)."""
import pytest
import torch

from course_lib.models.minilm import embed_sentences, encode_batch, load_minilm, load_minilm_tokenizer, minilm_path

SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.",
             "The girl is carrying a baby on her back, smiling.", "Transformers attend to every token."]


@pytest.fixture(scope="module")
def ours():
    return load_minilm(), load_minilm_tokenizer()


def test_tokenizer_matches_hugging_face(ours):
    from transformers import AutoTokenizer
    hf_tok = AutoTokenizer.from_pretrained(str(minilm_path()), local_files_only=True)
    ids, mask = encode_batch(ours[1], SENTENCES)
    theirs = hf_tok(SENTENCES, padding=True, return_tensors="pt")
    assert torch.equal(ids, theirs["input_ids"]) and torch.equal(mask, theirs["attention_mask"])


def test_hidden_states_match_transformers(ours):
    from transformers import BertModel
    hf = BertModel.from_pretrained(str(minilm_path()), local_files_only=True).eval()
    model, tok = ours
    ids, mask = encode_batch(tok, SENTENCES)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask)
        mine = model(ids, mask)
    err = (mine.last_hidden_state - theirs.last_hidden_state)[mask.bool()].abs().max().item()
    err_pool = (mine.pooler_output - theirs.pooler_output).abs().max().item()
    print(f"MiniLM: max abs hidden-state error {err:.2e}, pooler {err_pool:.2e}")
    assert err <= 1e-4 and err_pool <= 1e-4


def test_sentence_embeddings_match_sentence_transformers(ours):
    st = pytest.importorskip("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_path()), device="cpu", local_files_only=True)
    theirs = torch.as_tensor(reference.encode(SENTENCES, convert_to_numpy=True))
    mine = embed_sentences(*ours, SENTENCES)
    err = (mine - theirs).abs().max().item()
    print(f"MiniLM sentence embedding: max abs error {err:.2e}")
    assert err <= 1e-4
    assert torch.allclose(mine.norm(dim=-1), torch.ones(len(SENTENCES)))


def test_similar_sentences_are_closer(ours):
    e = embed_sentences(*ours, SENTENCES)
    sim = e @ e.T
    assert sim[0, 1] > 0.6 and sim[0, 1] > sim[0, 2] + 0.4


def test_encode_batch_truncates_and_rejects_a_bare_string(ours):
    tok = ours[1]
    ids, mask = encode_batch(tok, ["word " * 50], max_length=10)
    assert ids.shape == (1, 10) and ids[0, -1] == tok.encode("")[-1]  # still ends with [SEP]
    with pytest.raises(TypeError, match="list of strings"):
        encode_batch(tok, "one sentence")
