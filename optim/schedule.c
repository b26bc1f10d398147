// schedule.c: the learning-rate schedule (open_clip's cosine_lr / const_lr with linear warmup).
#include <math.h>

#include "optim.h"

float lr_at(const Config *c, long step) {
    if (step < c->warmup) return c->lr * (float)(step + 1) / (float)c->warmup;
    if (c->schedule == SCHEDULE_CONST) return c->lr;
    long e = step - c->warmup, es = c->steps - c->warmup;
    if (es <= 0) return c->lr;
    return (float)(0.5 * (1.0 + cos(M_PI * (double)e / (double)es)) * c->lr);
}
