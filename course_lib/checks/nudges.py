"""The first hint tier of the lesson exercises: a nudge that points at the idea without giving
it. `hint(name)` prints the nudge, `hint(name, 2)` the check's own, more explicit hint (the idea),
`solution(name)` the code. (Newer checks carry their nudge and idea in `register` itself.)"""

NUDGES = {
    "check_softmax": "Softmax turns scores into weights that are positive and add up to 1 along `dim`. "
                     "What happens to exp(x) when x is 1000, and which number can you subtract without "
                     "changing the result?",
    "check_scaled_dot_product_attention": "Four steps: compare every query with every key, scale, hide "
                                          "what the mask forbids, turn scores into weights and mix the values.",
    "check_causal_mask": "Query i may look at keys 0..i. Draw the (T, T) matrix: which triangle is True?",
    "check_multi_head_attention": "It is your single-head attention run H times in parallel on slices of "
                                  "width C // H: the whole trick is reshaping (B, T, C) into heads and back.",
    "check_repeat_kv": "Each key/value head serves n_rep query heads that sit next to each other. Which "
                       "torch operation copies every slice n_rep times in place?",
    "check_online_softmax_attention": "Softmax over keys you have not seen yet: keep a running maximum and "
                                      "a running sum, and rescale what you have accumulated when the maximum grows.",
    "check_sliding_window_mask": "Like the causal mask, but a query also may not look more than window - 1 "
                                 "positions back. Compare i - j with 0 and with the window.",
    "check_sliding_window_attention": "Each query needs only its last `window` keys: gather them as a (T, window) "
                                      "strip instead of building the whole (T, T) matrix.",
    "check_causal_linear_attention": "Replace exp(q·k) by φ(q)·φ(k): the sum over past keys then factors into "
                                     "a running matrix you can accumulate with a cumulative sum.",
    "check_eval_at_length": "Average the model's next-token loss over several batches of exactly `length` "
                            "tokens; no gradients and eval mode while you measure.",
    "check_gelu": "GELU weights x by the probability that a standard normal is below x; the tanh formula "
                  "from the lesson approximates that probability.",
    "check_layer_norm": "Per position, over the last axis: make the features mean 0 and variance 1, then "
                        "scale and shift with learned parameters.",
    "check_rms_norm": "LayerNorm without the mean: divide by the root of the mean square, then scale.",
    "check_swiglu_ffn": "Two projections up, one of them through SiLU, multiplied together, one projection down.",
    "check_pre_norm_block": "Pre-norm: the norm sits inside each residual branch, in front of the sub-layer; "
                            "the residual path itself is never normalised.",
    "check_sample_top_p": "Keep the smallest set of most likely tokens whose probabilities add up to p, "
                          "then sample among them.",
    "check_generate": "Feed the prompt once, then one token at a time, letting the cache remember the past.",
    "check_decoder_block": "Three residual branches in order: masked self-attention, cross-attention to the "
                           "encoder's output, the feed-forward; each pre-normed.",
    "check_mlm_mask": "BERT's 15 % / 80-10-10 rule: choose positions, then decide for each chosen one whether "
                      "it becomes [MASK], a random token or stays; never choose special tokens.",
    "check_shift_right": "The decoder sees the labels moved one step to the right, starting with the start "
                         "token; -100 is a label marker, not a token.",
    "check_gpt_forward": "Token embedding plus position embedding, the blocks (causal), a final norm, and "
                         "the output layer that shares the embedding's weights.",
    "check_top_k_routing": "Router scores -> probabilities over experts -> the k largest per token -> "
                           "weights that add up to 1 over those k.",
    "check_load_balancing_loss": "Compare, per expert, the share of tokens it got with the average "
                                 "probability the router gave it; the loss is smallest when both are uniform.",
    "check_sparse_moe": "Route each token, run only its chosen experts, add their outputs weighted by the "
                        "router; tokens beyond an expert's capacity skip it.",
    "check_sinusoidal_encoding": "Each pair of columns is a sine and a cosine of the position at one "
                                 "frequency; the frequencies fall geometrically across the pairs.",
    "check_apply_rope": "RoPE rotates each pair of features by an angle that grows with the position; "
                        "pairs are (0, 1), (2, 3), ... here.",
    "check_apply_rope_half": "The same rotation, with the pairs laid out as (i, i + D/2): the first half "
                             "pairs with the second.",
    "check_alibi_slopes": "One slope per head, a geometric sequence; heads that are not a power of two "
                          "borrow from the next power of two.",
    "check_relative_position_bucket": "Small distances get one bucket each; larger ones share buckets whose "
                                      "width grows logarithmically up to max_distance.",
    "check_selective_scan": "A recurrence over time: the state decays by exp(Δ·A) and takes in Δ·B·x; the "
                            "output reads the state with C.",
    "check_bpe_merge": "Scan the list left to right and replace each occurrence of the pair by the new id, "
                       "without overlapping.",
    "check_previous_token_score": "The weight each query puts on the key just before it lies on one "
                                  "diagonal of the attention matrix.",
    "check_quantize_per_channel": "One scale per output row: the row's largest magnitude maps to 127.",
    "check_cosine_lr": "Three regions of the step axis: a linear warm-up, a half cosine down to min_lr, "
                       "and min_lr after the end.",
    "check_clip_grad_norm": "Measure one norm over all gradients together; if it is too large, shrink all "
                            "of them by the same factor, in place.",
}
