train_clip: train_clip.c data/loader.h data/../model/config.h \
 model/checkpoint.h model/../optim/optim.h model/../optim/../model/clip.h \
 model/safetensors.h model/clip_cpu.h model/utils.h optim/diagnostics.h
data/loader.h:
data/../model/config.h:
model/checkpoint.h:
model/../optim/optim.h:
model/../optim/../model/clip.h:
model/safetensors.h:
model/clip_cpu.h:
model/utils.h:
optim/diagnostics.h:
