# Makefile for train_clip.
#   make            build ./train_clip (CPU always; CUDA parts when nvcc is found)
#   make test       build and run every test; ends with "N passed, N failed, N skipped"
#   make bench      build and run the benchmarks (GPU ones need a GPU)
#   make fuzz       build the libFuzzer targets (clang)
# Optional libraries are found in .deps/ (see scripts/vendor_deps.sh) or the system; a missing one is
# reported on one line with the Debian package that provides it.

CC        ?= gcc
NVCC      ?= nvcc
BUILD     := build
DEPS      := .deps
CFLAGS    ?= -O3 -march=native
CFLAGS    += -std=gnu11 -fopenmp -Wall -Wextra -Wno-unused-parameter -Wno-sign-compare -I$(DEPS)/include -MMD -MP
LDFLAGS   += -fopenmp -L$(DEPS)/lib
LDLIBS    += -lm -lpthread -lz
CUDA_ARCH ?= -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=sm_80
NVFLAGS   ?= -O3 -std=c++17 $(CUDA_ARCH) -Xcompiler -fopenmp -I$(DEPS)/include -lineinfo -MMD -MP

# ---------------------------------------------------------------- optional libraries
have_header = $(shell printf '#include <stddef.h>\n#include <stdio.h>\n#include <$(1)>\n' | $(CC) -I$(DEPS)/include -E - >/dev/null 2>&1 && echo yes)
MISSING :=

ifeq ($(call have_header,jpeglib.h),yes)
  CFLAGS += -DHAVE_JPEG
  LDLIBS += -ljpeg
else
  MISSING += "libjpeg: JPEG images cannot be decoded (Debian: apt-get install libjpeg62-turbo-dev)"
endif
ifeq ($(call have_header,stb/stb_image.h),yes)
  CFLAGS += -DHAVE_STB
else
  MISSING += "stb_image: PNG/BMP/GIF images cannot be decoded (Debian: apt-get install libstb-dev)"
endif
ifeq ($(call have_header,webp/decode.h),yes)
  CFLAGS += -DHAVE_WEBP
  LDLIBS += -lwebp $(if $(wildcard $(DEPS)/lib/libsharpyuv.a),-lsharpyuv)
else
  MISSING += "libwebp: WebP images will be skipped (Debian: apt-get install libwebp-dev)"
endif
ifeq ($(call have_header,utf8proc.h),yes)
  CFLAGS += -DHAVE_UTF8PROC
  LDLIBS += -lutf8proc
else
  MISSING += "utf8proc: the tokenizer is unavailable, only data = synthetic works (Debian: apt-get install libutf8proc-dev)"
endif

# MPI: mpicc's flags; or, on a machine with OpenMPI's runtime (mpirun, libmpi.so.40) but no mpicc and mpi.h,
# MPI_INCLUDE = a folder holding a copy of OpenMPI's headers (mpi.h of the same major version) and the runtime
# library itself, found by ldconfig unless MPI_LIBRARY names it (README.md "Several GPUs"):
#   make MPI_INCLUDE=.mpi/include [MPI_LIBRARY=/path/libmpi.so.40]
MPI_INCLUDE ?=
MPICC_PATH := $(shell command -v mpicc 2>/dev/null)
ifneq ($(MPI_INCLUDE),)
  MPI_LIBRARY ?= $(shell /sbin/ldconfig -p 2>/dev/null | sed -n 's/.*libmpi\.so\.40 .*=> //p' | head -1)
  ifeq ($(wildcard $(MPI_INCLUDE)/mpi.h),)
    $(error MPI_INCLUDE=$(MPI_INCLUDE) holds no mpi.h)
  endif
  ifeq ($(MPI_LIBRARY),)
    $(error MPI_INCLUDE is set but no libmpi.so.40 was found (ldconfig -p); set MPI_LIBRARY=/path/libmpi.so.40)
  endif
  # -lmpi through a link libmpi.so in the build folder: nvcc takes no library file named by its path
  $(shell mkdir -p $(BUILD)/mpi && ln -sf $(abspath $(MPI_LIBRARY)) $(BUILD)/mpi/libmpi.so)
  CFLAGS  += -DHAVE_MPI -I$(MPI_INCLUDE)
  LDFLAGS += -L$(BUILD)/mpi -Wl,-rpath,$(dir $(MPI_LIBRARY))
  LDLIBS  += -lmpi
else ifneq ($(MPICC_PATH),)
  CFLAGS  += -DHAVE_MPI $(shell mpicc --showme:compile 2>/dev/null)
  NVFLAGS += -DHAVE_MPI $(shell mpicc --showme:compile 2>/dev/null)
  LDLIBS  += $(shell mpicc --showme:link 2>/dev/null)
else
  MISSING += "MPI: mpirun launches are unavailable, single process or RANK/WORLD_SIZE starts only (Debian: apt-get install libopenmpi-dev)"
endif

NVCC_PATH := $(shell command -v $(NVCC) 2>/dev/null)
ifneq ($(NVCC_PATH),)
  CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC_PATH))
  CFLAGS    += -DHAVE_CUDA -I$(CUDA_HOME)/include
  NVFLAGS   += -DHAVE_CUDA
  LDFLAGS   += -L$(CUDA_HOME)/lib64 -L$(CUDA_HOME)/lib -Wl,-rpath,$(CUDA_HOME)/lib64
  LDLIBS    += -lcublasLt -lcublas -lcudart -lstdc++
  # NCCL (multi-GPU): nccl.h beside the CUDA headers (this machine and the GPU machines) or the system's
  NCCL_H := $(firstword $(wildcard $(CUDA_HOME)/include/nccl.h /usr/include/nccl.h))
  ifneq ($(NCCL_H),)
    CFLAGS  += -DHAVE_NCCL
    NVFLAGS += -DHAVE_NCCL
    LDLIBS  += -lnccl
  else
    MISSING += "NCCL: one GPU per run only; multi-GPU training needs it (Debian: apt-get install libnccl-dev)"
  endif
else
  MISSING += "nvcc: building without CUDA, CPU only (install the CUDA toolkit for the GPU path)"
endif

# nvcc links too, but takes linker options as -Xlinker (it splits them at commas) and no -fopenmp
comma := ,
NV_LDFLAGS = $(patsubst -Wl$(comma)%,-Xlinker %,$(filter-out -fopenmp,$(LDFLAGS)))

# ---------------------------------------------------------------- sources
LIB_C   := $(wildcard model/*.c optim/*.c data/*.c)
LIB_CU  := $(if $(NVCC_PATH),$(wildcard model/*.cu optim/*.cu kernels/*.cu))
LIB_OBJ := $(LIB_C:%.c=$(BUILD)/%.o) $(LIB_CU:%.cu=$(BUILD)/%.cu.o)
TEST_C  := $(wildcard tests/test_*.c)
TEST_CU := $(if $(NVCC_PATH),$(wildcard tests/test_*.cu))
TESTS   := $(TEST_C:tests/%.c=$(BUILD)/tests/%) $(TEST_CU:tests/%.cu=$(BUILD)/tests/%)
BENCH_C := $(wildcard tests/bench_*.c)
BENCH_CU:= $(if $(NVCC_PATH),$(wildcard tests/bench_*.cu))
BENCHES := $(BENCH_C:tests/%.c=$(BUILD)/tests/%) $(BENCH_CU:tests/%.cu=$(BUILD)/tests/%)

.PHONY: all test bench fuzz clean report
all: report train_clip

report:
	@for m in $(MISSING); do echo "note: $$m"; done

train_clip: train_clip.c $(LIB_OBJ)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c -o $@ $<

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c -o $@ $<

# tests and benchmarks: one binary per file, linked with every library object
$(BUILD)/tests/%: tests/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJ) $(LDLIBS)

# nvcc takes linker flags as -Xlinker=..., not -Wl,...
comma := ,
NV_LDFLAGS = $(patsubst -Wl$(comma)%,-Xlinker=%,$(filter-out -fopenmp,$(LDFLAGS)))
$(BUILD)/tests/%: tests/%.cu $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -o $@ $< $(LIB_OBJ) $(NV_LDFLAGS) -Xcompiler -fopenmp $(LDLIBS)

test: report train_clip $(TESTS)
	@bash tests/run_tests.sh $(TESTS)

bench: report train_clip $(BENCHES)
	@for b in $(BENCHES); do echo "== $$b"; $$b || exit 1; done

clean:
	rm -rf $(BUILD) train_clip

# ---------------------------------------------------------------- data pipeline: fuzzers, ASan test build, bench-data
#   make fuzz        libFuzzer targets build/fuzz/fuzz_* (clang; tests/run_fuzz.sh SECONDS runs them)
#   make test-asan   every test built with ASan + UBSan into build-asan/ and run (./train_clip stays a normal build)
#   make bench-data  only the data loader benchmark
FUZZ_CC    ?= clang
SANITIZERS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_FLAGS := -std=gnu11 -g -O1 $(SANITIZERS) $(filter -D% -I%,$(filter-out -DHAVE_CUDA,$(CFLAGS)))
FUZZ_LIBS  := $(filter-out -lcublasLt -lcublas -lcudart -lstdc++ -lnccl,$(LDLIBS))
FUZZERS    := $(patsubst tests/%.c,$(BUILD)/fuzz/%,$(wildcard tests/fuzz_*.c))
SANITIZE_FLAGS ?=
CFLAGS     += $(SANITIZE_FLAGS)
LDFLAGS    += $(SANITIZE_FLAGS)
.PHONY: test-asan bench-data clean-asan

fuzz: $(FUZZERS)

$(BUILD)/fuzz/%: tests/%.c $(wildcard data/*.c data/*.h)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_FLAGS) -fsanitize=fuzzer -o $@ $< $(wildcard data/*.c) -L$(DEPS)/lib $(FUZZ_LIBS)

test-asan: report train_clip
	@$(MAKE) --no-print-directory BUILD=build-asan NVCC=/nonexistent SANITIZE_FLAGS="-O1 -g $(SANITIZERS)" \
		$(TEST_C:tests/%.c=build-asan/tests/%)
	@bash tests/run_tests.sh $(TEST_C:tests/%.c=build-asan/tests/%)

bench-data: report $(BUILD)/tests/bench_data
	@$(BUILD)/tests/bench_data

clean: clean-asan
clean-asan:
	rm -rf build-asan
# ---------------------------------------------------------------- end of the data pipeline block

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
