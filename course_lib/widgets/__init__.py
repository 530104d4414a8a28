"""ipywidgets explorers. Each builds its controls, draws the default view at once, and
redraws on every change. Run headlessly (CI, `course_lib.tools.notebooks`; the environment
variable COURSE_LIB_HEADLESS=1) there is no front end to move the controls, so instead of
drawing into the widget it shows the default view as a plain figure below it: the stored
notebook then shows a picture wherever it is read, and nbval compares a stable output."""
from course_lib.widgets.core import is_headless, live_loss_plot, show_live_or_static  # noqa: F401
from course_lib.widgets.attention import (  # noqa: F401
    TOY_HEADS, TOY_TOKENS, attention_browser, attention_explorer, attention_map_explorer, pattern_explorer,
    toy_attention_heads)
from course_lib.widgets.components import (  # noqa: F401
    activation_explorer, alibi_explorer, norm_explorer, rope_rotation_explorer, routing_explorer, routing_picture,
    t5_bucket_explorer)
