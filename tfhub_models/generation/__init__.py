"""Pure sampling functions, logit processors and the decoding loops.  No variables.

Every function takes and returns tensors of static shape, so the whole loop
compiles with XLA.  Shapes: B rows, V vocabulary, T the id buffer length.

Each row carries its own settings (`RowSettings`, tensors [B]: its length
limits, processors, sampling warpers and seed), so that rows of different
requests merged into one batch are each decoded as if alone; `Limits` is what
the compiled loop can do for them (the buffer length, the largest n-gram ban
and top-k, which processors are compiled in).  Randomness is stateless inside
the loop: a row's draw at a step depends only on its seed and the step
(`draw_rows`), the same compiled with XLA or not; `row_seeds` draws fresh
seeds, outside compiled code.

  samplers.py    the sampling functions, their warpers, `Sampler`
  processors.py  repetition penalty, n-gram ban, forced tokens
  settings.py    `GenerationConfig`, `RowSettings`, `Limits`, processing per row
  loops.py       sampling, beam and contrastive search over a `DecoderState`
"""

from __future__ import annotations

from tfhub_models.generation.loops import (DecoderState, beam_search, contrastive_search,
                                           decode, sample_loop)
from tfhub_models.generation.processors import (force_token, no_repeat_ngram, presence,
                                                repetition_penalty)
from tfhub_models.generation.samplers import (DRAWING, NEG_INF, SAMPLERS, Sampler, draw_rows,
                                              get_sampler, greedy, keep_top_k, keep_top_p,
                                              random, row_seeds, scale, seed_int, top_k, top_p)
from tfhub_models.generation.settings import (SETTING_DTYPES, GenerationConfig, Limits,
                                             RowSettings, choose_sampler, default_settings,
                                             num_generated, process_logits, stop_ids, warp)

__all__ = ["DecoderState", "beam_search", "contrastive_search", "decode", "sample_loop",
           "force_token", "no_repeat_ngram", "presence", "repetition_penalty", "DRAWING",
           "NEG_INF", "SAMPLERS", "Sampler", "draw_rows", "get_sampler", "greedy", "keep_top_k",
           "keep_top_p", "random", "row_seeds", "scale", "seed_int", "top_k", "top_p",
           "SETTING_DTYPES", "GenerationConfig", "Limits", "RowSettings", "choose_sampler",
           "default_settings", "num_generated", "process_logits", "stop_ids", "warp"]
