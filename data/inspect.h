// inspect.h: `./train_clip --inspect-data SPEC [--limit N]`: reads a dataset the way training would and
// lists it, for checking shards before a long run.
#pragma once
#include "../model/config.h"

// Prints `key<TAB>WxH<TAB>caption` per usable sample in spec order (at most limit of them; limit <= 0:
// all), each skipped sample on stderr with its reason, then the totals line
// `samples: N skipped: N corrupt_image: N ... bad_shards: N`. Uses the config's image and caption
// settings (max_image_pixels, context_length). Returns the exit status: 0, or 1 if no sample is usable.
int inspect_data_main(const Config *c, const char *spec, long limit);
