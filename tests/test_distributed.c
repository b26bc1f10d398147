// test_distributed.c: process roles and the bootstrap broadcast with real processes on this machine:
// environment starts (RANK / WORLD_SIZE) with a file and a TCP (loopback) rendezvous, another run's file at
// the same path or ranks on the same port (told apart by the run id, and where the run id comes from), a missing
// peer that must end in an error naming it within the timeout (never a hang), and, when built with MPI and
// mpirun exists, an MPI start with broadcast, all-reduce and all-gather. Also where a node's ranks run:
// CPU lists, the cgroup's allowed CPUs (from made-up cgroup trees) and each rank's slice of them.
#define _GNU_SOURCE  // sched_getaffinity, cpu_set_t
#include <netinet/in.h>
#include <omp.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../model/cpuset.h"
#include "../model/distributed.h"
#include "../model/utils.h"
#include "test.h"

// Byte i of the 64 that rank 0 broadcasts. They start with '\n' and ' ' (as an NCCL id may): the file rendezvous
// once lost such a leading byte to its header's parsing.
static unsigned char sent_byte(int i) { return (unsigned char)(i * 22 + 10); }

// The child's whole life: join, receive rank 0's 64 bytes, check them. Exit code 0 = all good, 3 = other bytes.
static int child_main(void) {
    Dist d;
    dist_init(&d);
    unsigned char buf[64];
    for (int i = 0; i < 64; i++) buf[i] = d.rank == 0 ? sent_byte(i) : 0;
    dist_broadcast(&d, buf, sizeof(buf));
    for (int i = 0; i < 64; i++)
        if (buf[i] != sent_byte(i)) return 3;
    float x[3] = {1.0f + d.rank, 2, 3}, all[3 * 8];
    if (d.mpi) {
        dist_allreduce_sum(&d, x, 3);
        dist_allgather(&d, x, all, 3);
        float want = 0;
        for (int r = 0; r < d.world; r++) want += 1.0f + r;
        if (x[0] != want || x[1] != 2.0f * d.world || all[3 * (d.world - 1)] != want) return 4;
    }
    dist_finalize(&d);
    return 0;
}

// Start `started` of `world` ranks with the environment and a rendezvous; returns how many exited 0
// and the exit codes in rc.
static int run_world(int world, int started, const char *rendezvous, int *rc) {
    pid_t pids[8];
    for (int r = 0; r < started; r++) {
        pids[r] = fork();
        if (pids[r] == 0) {
            char v[16];
            snprintf(v, sizeof(v), "%d", r), setenv("RANK", v, 1), setenv("LOCAL_RANK", v, 1);
            snprintf(v, sizeof(v), "%d", world), setenv("WORLD_SIZE", v, 1);
            setenv("TRAIN_CLIP_RENDEZVOUS", rendezvous, 1);
            setenv("TRAIN_CLIP_RENDEZVOUS_TIMEOUT", "3", 1);
            freopen("/dev/null", "w", stderr);
            _exit(child_main());
        }
    }
    int ok = 0;
    for (int r = 0; r < started; r++) {
        int st;
        waitpid(pids[r], &st, 0);
        rc[r] = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
        ok += rc[r] == 0;
    }
    return ok;
}

static void test_single_process_default(void) {
    unsetenv("RANK"), unsetenv("WORLD_SIZE");
    Dist d;
    dist_init(&d);
    float x = 2;
    dist_allreduce_sum(&d, &x, 1);
    EXPECT(d.rank == 0 && d.world == 1 && x == 2, "single process: rank %d world %d", d.rank, d.world);
}

// Every rank's CPU slice: contiguous, disjoint, covering all n CPUs, sizes within one of each other; with more
// ranks than CPUs, one valid CPU each.
static void test_cpu_slices(void) {
    int cases[][2] = {{32, 2}, {32, 8}, {2, 2}, {7, 3}, {128, 8}, {96, 7}, {3, 8}, {1, 4}};
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        int n = cases[k][0], size = cases[k][1], next = 0, least = n, most = 0, bad = 0;
        for (int r = 0; r < size; r++) {
            int lo, hi;
            dist_slice(n, r, size, &lo, &hi);
            if (lo < 0 || hi > n || hi <= lo) bad = 1;
            if (size <= n && lo != next) bad = 1;
            next = hi, least = hi - lo < least ? hi - lo : least, most = hi - lo > most ? hi - lo : most;
        }
        EXPECT(!bad && (size > n ? most == 1 : next == n && most - least <= 1), "%d CPUs over %d ranks: slices wrong", n, size);
    }
}

// CPU lists as the cgroup files, taskset and /proc write them: parsed, printed back the same, bad ones refused.
static void test_cpu_lists(void) {
    struct { const char *text, *printed; int count; } good[] = {
        {"0", "0", 1}, {"0-3", "0-3", 4}, {"0-3,8-11\n", "0-3,8-11", 8}, {"7\n", "7", 1},
        {"0,2,4-5,9", "0,2,4-5,9", 5}, {"1-2,3-4", "1-4", 4}, {"5-5", "5", 1}, {"1023", "1023", 1},
    };
    char buf[256];
    for (size_t k = 0; k < sizeof(good) / sizeof(good[0]); k++) {
        cpu_set_t set;
        int rc = cpuset_parse(good[k].text, &set);
        cpuset_print(buf, sizeof(buf), &set);
        EXPECT(rc == 0 && CPU_COUNT(&set) == good[k].count && !strcmp(buf, good[k].printed),
               "\"%s\": rc %d, %d CPUs, printed back as \"%s\"", good[k].text, rc, CPU_COUNT(&set), buf);
    }
    cpu_set_t set, want;
    CPU_ZERO(&want);
    for (int c = 0; c < 12; c++)
        if (c < 4 || c >= 8) CPU_SET(c, &want);
    EXPECT(cpuset_parse("0-3,8-11\n", &set) == 0 && CPU_EQUAL(&set, &want), "0-3,8-11: not the CPUs 0-3 and 8-11");
    const char *bad[] = {"", "\n", "x", "-1", "+1", " 1", "1 ", "3-1", "1-", "-", "1,", ",1", "1,,2", "1--2",
                         "0-3\n\n", "1\n2", "0x1", "1024", "0-1024", "99999999999999999999"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++)
        EXPECT(cpuset_parse(bad[k], &set) == -1, "\"%s\" was accepted", bad[k]);
    // any set printed reads back as itself (sets from a fixed pseudo-random sequence, sparse to dense)
    unsigned x = 12345;
    for (int k = 0; k < 200; k++) {
        CPU_ZERO(&want);
        for (int c = 0; c < 96; c++)
            if (((x = x * 1103515245u + 12345u) >> 16) % 8 < (unsigned)(k % 9)) CPU_SET(c, &want);
        if (!CPU_COUNT(&want)) continue;
        cpuset_print(buf, sizeof(buf), &want);
        EXPECT(cpuset_parse(buf, &set) == 0 && CPU_EQUAL(&set, &want), "\"%s\" did not read back as the set printed", buf);
    }
}

// A file under the test's scratch folder, with its folders.
static void put(const char *path, const char *text) {
    char dir[512];
    snprintf(dir, sizeof(dir), "%s", test_path(path));
    *strrchr(dir, '/') = 0;
    if (mkdir_p(dir)) fatal("mkdir_p %s: %s", dir, strerror(errno));
    FILE *f = fopenCheck(test_path(path), "w");
    fwriteCheck(text, 1, strlen(text), f);
    fcloseCheck(f);
}

// A scratch file's text ("" when there is none), in one of 4 rotating buffers.
static const char *text_of(const char *name) {
    static char bufs[4][4096];
    static int k;
    char *buf = bufs[k++ % 4];
    FILE *f = fopen(test_path(name), "r");
    size_t n = f ? fread(buf, 1, sizeof(bufs[0]) - 1, f) : 0;
    if (f) fclose(f);
    buf[n] = 0;
    return buf;
}

// The allowed CPUs from made-up cgroup trees: v1 and v2, the process's own cgroup or its nearest ancestor with
// the file (a container that sees the host's path), v1 before a hybrid system's v2, none found.
static void test_cgroup_cpuset(void) {
    put("v1/cpuset/cpuset.cpus", "0-31\n");
    put("v1/cpuset/slurm/job_1/cpuset.cpus", "8-15\n");
    put("v1/cpuset/slurm/job_1/step_0/cpuset.cpus", "8-9\n");
    put("v2/cpuset.cpus.effective", "0-63\n");
    put("v2/kubepods/pod1/cpuset.cpus.effective", "4-7,12-15\n");
    put("v2/kubepods/pod1/cpuset.cpus", "\n");  // v2's own request, empty: not the file read
    put("hybrid/cpuset.cpus.effective", "0-63\n");
    put("hybrid/cpuset/cpuset.cpus", "0-1\n");
    put("bad/cpuset.cpus.effective", "garbage\n");
    put("none/unrelated", "");
    struct { const char *cgroups, *root, *want; } cases[] = {
        {"12:cpuset:/slurm/job_1/step_0\n1:name=systemd:/user.slice\n", "v1", "8-9"},
        {"12:cpuset:/slurm/job_1/step_7\n", "v1", "8-15"},                   // no such cgroup here: its parent's
        {"4:cpuset:/docker/0123abcd\n", "v1", "0-31"},                       // the container's at the mount's root
        {"3:cpu,cpuacct:/\n5:cpuacct,cpuset:/slurm/job_1\n", "v1", "8-15"}, // cpuset among other controllers
        {"0::/kubepods/pod1/container2\n", "v2", "4-7,12-15"},              // no cpuset controller: its pod's
        {"0::/kubepods/pod1", "v2", "4-7,12-15"},                           // no final newline
        {"0::/\n", "v2", "0-63"},
        {"3:cpuset:/\n1:name=systemd:/\n0::/\n", "hybrid", "0-1"},        // v1's cpuset wins, listed first
        {"0::/user.slice\n3:cpuset:/\n", "hybrid", "0-1"},                 // or last
        {"0::/\n", "bad", NULL},
        {"0::/a/b\n", "none", NULL},
        {"1:name=systemd:/\n2:cpu:/\n", "v1", NULL},                       // neither v1's cpuset nor v2
        {"", "v2", NULL},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        cpu_set_t set;
        char root[512], got[256] = "";
        snprintf(root, sizeof(root), "%s", test_path(cases[k].root));
        int rc = cpuset_from_cgroup(cases[k].cgroups, root, &set);
        if (rc == 0) cpuset_print(got, sizeof(got), &set);
        EXPECT(cases[k].want ? rc == 0 && !strcmp(got, cases[k].want) : rc == -1, "cgroups \"%s\" under %s: rc %d, CPUs \"%s\", want %s",
               cases[k].cgroups, cases[k].root, rc, got, cases[k].want ? cases[k].want : "none (rc -1)");
    }
}

// This process's affinity lies within the CPUs its cgroup allows, as read here.
static void test_cgroup_here(void) {
    cpu_set_t cgroup, affinity, both;
    if (cpuset_allowed(&cgroup)) SKIP("no cgroup cpuset file could be read here");
    sched_getaffinity(0, sizeof(affinity), &affinity);
    CPU_AND(&both, &affinity, &cgroup);
    char a[256], c[256];
    cpuset_print(a, sizeof(a), &affinity), cpuset_print(c, sizeof(c), &cgroup);
    EXPECT(CPU_EQUAL(&both, &affinity), "affinity %s is not within the cgroup's CPUs %s", a, c);
}

// A rank whose affinity is its container's whole set takes its slice of it (in the set's order, across gaps); one
// bound to fewer CPUs by its launcher keeps them.
static void test_cpu_placement(void) {
    cpu_set_t allowed, affinity, mine;
    cpuset_parse("4-7,12-15", &allowed);
    int n = CPU_COUNT(&allowed);
    struct { const char *affinity; int rank, size, bound; const char *want; } cases[] = {
        {"4-7,12-15", 0, 2, 0, "4-7"},        {"4-7,12-15", 1, 2, 0, "12-15"},
        {"4-7,12-15", 1, 3, 0, "6-7,12"},     {"4-7,12-15", 2, 3, 0, "13-15"},
        {"4-7,12-15", 7, 8, 0, "15"},         {"4-7,12-15", 9, 10, 0, "15"},  // more ranks than CPUs
        {"12-13", 0, 2, 1, "12-13"},          {"5", 1, 2, 1, "5"},
    };
    char got[256];
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        cpuset_parse(cases[k].affinity, &affinity);
        int bound = cpuset_place(n, &affinity, cases[k].rank, cases[k].size, &mine);
        cpuset_print(got, sizeof(got), &mine);
        EXPECT(bound == cases[k].bound && !strcmp(got, cases[k].want), "allowed 4-7,12-15, affinity %s, rank %d of %d: %s %s, want %s %s",
               cases[k].affinity, cases[k].rank, cases[k].size, bound ? "bound" : "sliced", got,
               cases[k].bound ? "bound" : "sliced", cases[k].want);
    }
}

// A second rank of two on this machine, started with all the CPUs its cgroup allows, keeps its half of them
// and that many OpenMP threads (a child process: the binding is for the rest of its life).
static void test_place_threads(void) {
    cpu_set_t set, cgroup;
    sched_getaffinity(0, sizeof(set), &set);
    int n = CPU_COUNT(&set), allowed = cpuset_allowed(&cgroup) == 0 ? CPU_COUNT(&cgroup) : (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (n < allowed || n < 2 || getenv("OMP_NUM_THREADS")) {
        SKIP("this process is bound to %d of %d CPUs or OMP_NUM_THREADS is set", n, allowed);
        return;
    }
    int first = 0, last = CPU_SETSIZE - 1;
    while (!CPU_ISSET(first, &set)) first++;
    while (!CPU_ISSET(last, &set)) last--;
    pid_t pid = fork();
    if (pid == 0) {
        setenv("RANK", "1", 1), setenv("LOCAL_RANK", "1", 1), setenv("WORLD_SIZE", "2", 1), setenv("LOCAL_WORLD_SIZE", "2", 1);
        setenv("TRAIN_CLIP_RENDEZVOUS", "file:/nonexistent/unused", 1);
        if (!freopen("/dev/null", "w", stdout)) _exit(9);
        Dist d;
        dist_init(&d);
        dist_place_threads(&d, 0);
        cpu_set_t mine;
        sched_getaffinity(0, sizeof(mine), &mine);
        int lo, hi, want = allowed / 2;
        dist_slice(n, 1, 2, &lo, &hi);
        int ok = CPU_COUNT(&mine) == hi - lo && CPU_ISSET(last, &mine) && !CPU_ISSET(first, &mine);
        _exit(!ok ? 1 : omp_get_max_threads() != want ? 2 : 0);
    }
    int st;
    waitpid(pid, &st, 0);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    EXPECT(rc == 0, "local rank 1 of 2: %s (exit %d)", rc == 1 ? "not bound to the upper half of the CPUs" : "wrong OpenMP thread count", rc);
}

// ---------------------------------------------------------------- starts that must stop with one clear error

// Every variable dist_init reads to learn how it was started: each start case clears them all, then sets its own.
static const char *launch_vars[] = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "TRAIN_CLIP_RENDEZVOUS",
                                    "TRAIN_CLIP_RENDEZVOUS_TIMEOUT", "MASTER_ADDR", "MASTER_PORT", "SLURM_LOCALID",
                                    "SLURM_NTASKS_PER_NODE", "SLURM_STEP_NUM_TASKS", "MPI_LOCALNRANKS",
                                    "OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "TRAIN_CLIP_RUN_ID", "SLURM_JOB_ID",
                                    "SLURM_STEP_ID", "SLURM_RESTART_COUNT", "TORCHELASTIC_RUN_ID", "TORCHELASTIC_RESTART_COUNT"};

typedef struct {
    const char *vars[10];  // "NAME=value", NULL-terminated
    int broadcast;         // also take part in the bootstrap broadcast (child_main: exit code 3 when other bytes came)
} Start;

// In a child process: dist_init (and the broadcast) in exactly the case's environment; killed by SIGALRM after 15 s,
// which the caller sees as exit code -1 (a hang).
static void start_child(void *arg) {
    const Start *s = arg;
    for (size_t k = 0; k < sizeof(launch_vars) / sizeof(launch_vars[0]); k++) unsetenv(launch_vars[k]);
    for (int k = 0; s->vars[k]; k++) {
        char name[64];
        const char *eq = strchr(s->vars[k], '=');
        snprintf(name, sizeof(name), "%.*s", (int)(eq - s->vars[k]), s->vars[k]);
        setenv(name, eq + 1, 1);
    }
    alarm(15);
    if (!freopen("/dev/null", "w", stdout)) _exit(9);
    if (s->broadcast) _exit(child_main());
    Dist d;
    dist_init(&d);
}

// Runs the case; returns its exit code, its stderr in msg.
static int start(const Start *s, char *msg, size_t cap) { return test_in_child(start_child, (void *)s, msg, cap); }

// Starts the case in the background `late_ms` from now, its stderr into the scratch file `err`; returns its process id.
static pid_t start_late(const Start *s, int late_ms, const char *err) {
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid == 0) {
        usleep((useconds_t)late_ms * 1000);
        if (!freopen(test_path(err), "w", stderr) || setvbuf(stderr, NULL, _IONBF, 0)) _exit(9);  // unbuffered as before: _exit follows
        start_child((void *)s);
        _exit(0);
    }
    return pid;
}

// A started case's exit code, once it ends (-1: it did not exit, e.g. killed by start_child's alarm: a hang).
static int exit_code(pid_t pid) {
    int st;
    return waitpid(pid, &st, 0) == pid && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// Environment values that cannot be a start: each stops with exit code 1 and a message naming the variable, at once.
static void test_bad_environment(void) {
    struct { Start s; const char *named; } cases[] = {
        {{.vars = {"WORLD_SIZE=2", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "RANK"},           // every process would be rank 0
        {{.vars = {"WORLD_SIZE=2", "RANK=", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "RANK"},  // RANK=$UNSET_VARIABLE
        {{.vars = {"WORLD_SIZE=", "RANK="}}, "WORLD_SIZE"},
        {{.vars = {"WORLD_SIZE=", "RANK=1"}}, "WORLD_SIZE"},
        {{.vars = {"WORLD_SIZE=2", "RANK=abc", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "RANK"},
        {{.vars = {"WORLD_SIZE=2", "RANK=-1", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "RANK"},
        {{.vars = {"WORLD_SIZE=2", "RANK=1x", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "RANK"},
        {{.vars = {"WORLD_SIZE=2", "RANK=2", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "RANK"},
        {{.vars = {"WORLD_SIZE=two", "RANK=0"}}, "WORLD_SIZE"},
        {{.vars = {"WORLD_SIZE=0", "RANK=0"}}, "WORLD_SIZE"},
        {{.vars = {"WORLD_SIZE=4", "RANK=1", "LOCAL_RANK=2", "LOCAL_WORLD_SIZE=2", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "LOCAL_RANK"},
        {{.vars = {"WORLD_SIZE=4", "RANK=1", "LOCAL_RANK=", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, "LOCAL_RANK"},
        {{.vars = {"WORLD_SIZE=2", "RANK=1"}}, "TRAIN_CLIP_RENDEZVOUS"},                     // no rendezvous
        {{.vars = {"WORLD_SIZE=2", "RANK=1", "TRAIN_CLIP_RENDEZVOUS=nfs:/x"}}, "TRAIN_CLIP_RENDEZVOUS"},
        {{.vars = {"WORLD_SIZE=2", "RANK=1", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x", "TRAIN_CLIP_RUN_ID="}}, "TRAIN_CLIP_RUN_ID"},
        {{.vars = {"WORLD_SIZE=2", "RANK=1", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x", "TRAIN_CLIP_RUN_ID=my run"}}, "TRAIN_CLIP_RUN_ID"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char msg[1024], env[256] = "";
        for (int i = 0; cases[k].s.vars[i]; i++) snprintf(env + strlen(env), sizeof(env) - strlen(env), "%s ", cases[k].s.vars[i]);
        time_t t0 = time(NULL);
        int rc = start(&cases[k].s, msg, sizeof(msg));
        EXPECT(rc == 1 && strstr(msg, cases[k].named) && time(NULL) - t0 < 5, "%s: exit %d after %ld s, want 1 and an error naming %s: %s",
               env, rc, (long)(time(NULL) - t0), cases[k].named, msg);
    }
}

// Rendezvous addresses that cannot work stop every rank at the start, naming the variable, rather than after the
// rendezvous timeout (or never: rank 0 listened on a random port for "tcp:HOST:abc").
static void test_bad_rendezvous(void) {
    struct { const char *rendezvous, *addr, *port, *named; } cases[] = {
        {"tcp:127.0.0.1:abc", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},  {"tcp:127.0.0.1:0", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},
        {"tcp:127.0.0.1:65536", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"}, {"tcp:127.0.0.1:", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},
        {"tcp:127.0.0.1", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},       {"tcp::29500", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},
        {"tcp:127.0.0.1:2950x", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"}, {"tcp:127.0.0.1:-5", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},
        {"tcp:[]:29500", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},        {"file:", NULL, NULL, "TRAIN_CLIP_RENDEZVOUS"},
        {NULL, "127.0.0.1", "65535", "MASTER_PORT"},                  {NULL, "", "29500", "MASTER_ADDR"},
        {NULL, "127.0.0.1", "", "MASTER_PORT"},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char r[64], a[64], p[64], msg[1024];
        Start s = {.vars = {"WORLD_SIZE=2", "RANK=1"}};
        snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=%s", cases[k].rendezvous);
        snprintf(a, sizeof(a), "MASTER_ADDR=%s", cases[k].addr), snprintf(p, sizeof(p), "MASTER_PORT=%s", cases[k].port);
        if (cases[k].rendezvous) s.vars[2] = r;
        else s.vars[2] = a, s.vars[3] = p;
        int rc = start(&s, msg, sizeof(msg));
        EXPECT(rc == 1 && strstr(msg, cases[k].named), "%s %s: exit %d, want 1 naming %s: %s", s.vars[2], s.vars[3] ? s.vars[3] : "",
               rc, cases[k].named, msg);
    }
}

// A launcher that started several processes without telling them their ranks (srun without --mpi and without RANK,
// or a build without MPI under mpirun or an MPI launcher): each would train alone on the same data, so each stops
// naming the launcher's variable. WORLD_SIZE in the environment is a start from it, whichever launcher ran it.
static void test_launcher_without_ranks(void) {
    struct { Start s; int rc; const char *named; } cases[] = {
        {{.vars = {"SLURM_STEP_NUM_TASKS=4"}}, 1, "SLURM_STEP_NUM_TASKS"},
        {{.vars = {"SLURM_STEP_NUM_TASKS=1"}}, 0, ""},
        {{.vars = {"SLURM_STEP_NUM_TASKS=4", "WORLD_SIZE=4", "RANK=1", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, 0, ""},
#ifndef HAVE_MPI  // with MPI these start through MPI
        {{.vars = {"PMI_SIZE=2"}}, 1, "PMI_SIZE"},
        {{.vars = {"OMPI_COMM_WORLD_SIZE=2"}}, 1, "OMPI_COMM_WORLD_SIZE"},
        {{.vars = {"OMPI_COMM_WORLD_SIZE=2", "WORLD_SIZE=2", "RANK=1", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}}, 0, ""},
#endif
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char msg[1024];
        int rc = start(&cases[k].s, msg, sizeof(msg));
        EXPECT(rc == cases[k].rc && strstr(msg, cases[k].named), "%s%s: exit %d, want %d%s%s: %s", cases[k].s.vars[0],
               cases[k].s.vars[1] ? " WORLD_SIZE=..." : "", rc, cases[k].rc, *cases[k].named ? " naming " : "", cases[k].named, msg);
    }
}

// A start the environment describes: dist_init's ranks, in a child (its exit code: 0 = as expected).
static void test_good_environment(void) {
    Start s = {.vars = {"WORLD_SIZE=4", "RANK=3", "LOCAL_RANK=1", "LOCAL_WORLD_SIZE=2", "TRAIN_CLIP_RENDEZVOUS=file:/tmp/x"}};
    char msg[1024];
    int rc = start(&s, msg, sizeof(msg));
    EXPECT(rc == 0, "WORLD_SIZE=4 RANK=3 LOCAL_RANK=1 LOCAL_WORLD_SIZE=2: exit %d: %s", rc, msg);
}

static void test_file_rendezvous(void) {
    char path[128];
    snprintf(path, sizeof(path), "file:%s", test_path("rendezvous"));
    int rc[8];
    int ok = run_world(4, 4, path, rc);
    EXPECT(ok == 4, "%d of 4 ranks got the broadcast (exit codes %d %d %d %d)", ok, rc[0], rc[1], rc[2], rc[3]);
}

// A rendezvous file as rank 0 of some run left it at the scratch path `name`: its header line, then the 64 bytes
// (or other bytes: another job's NCCL id), last written `age` seconds ago.
static void leftover(const char *name, const char *header, int age, int other_bytes) {
    unsigned char blob[64];
    for (int i = 0; i < 64; i++) blob[i] = (unsigned char)(sent_byte(i) ^ (other_bytes ? 0xff : 0));
    FILE *f = fopenCheck(test_path(name), "wb");
    fwriteCheck(header, 1, strlen(header), f);
    fwriteCheck(blob, 1, sizeof(blob), f);
    fcloseCheck(f);
    struct timespec times[2] = {{.tv_sec = time(NULL) - age}, {.tv_sec = time(NULL) - age}};
    if (utimensat(AT_FDCWD, test_path(name), times, 0)) fatal("utimensat: %s", strerror(errno));
}

// A rendezvous file that rank 0 does not come to replace, and that is not this run's: rank 1 stops at the timeout,
// saying what the file is: older than this process (without a run id, the only test there is), another run's (naming
// the path and both ids), or not this version's (an older train_clip's, which would once have been read). One with
// this run's id but another world: an error at once, naming its world.
static void test_file_rendezvous_leftovers(void) {
    char r[600];
    snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=file:%s", test_path("old"));
    struct { const char *header, *run_id; int age; const char *said[3]; } cases[] = {
        {"train_clip rendezvous v2 rank=0 world=2 bytes=64 run=\n", NULL, 3600, {"older than"}},
        {"train_clip rendezvous v2 rank=0 world=2 bytes=64 run=job-1\n", "TRAIN_CLIP_RUN_ID=job-2", 0,
         {"old.0 belongs to run id job-1", "not this run's job-2"}},
        {"train_clip rendezvous v2 rank=0 world=2 bytes=64 run=job-1\n", NULL, 0, {"belongs to run id job-1", "this run's (none)"}},
        {"train_clip rendezvous world=2 bytes=64\n", "TRAIN_CLIP_RUN_ID=job-2", 0, {"old.0 is not this version's", "job-2"}},
        {"train_clip rendezvous world=2 bytes=64\n", NULL, 0, {"not this version's"}},
        {"train_clip rendezvous v2 rank=0 world=4 bytes=64 run=\n", NULL, 0, {"world of 4"}},
        {"train_clip rendezvous v2 rank=0 world=4 bytes=64 run=job-2\n", "TRAIN_CLIP_RUN_ID=job-2", 3600, {"world of 4", "job-2"}},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char msg[1024];
        leftover("old.0", cases[k].header, cases[k].age, 1);
        Start s = {.vars = {"WORLD_SIZE=2", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=1", cases[k].run_id}, .broadcast = 1};
        int rc = start(&s, msg, sizeof(msg)), named = 1;
        for (int i = 0; i < 3 && cases[k].said[i]; i++) named &= strstr(msg, cases[k].said[i]) != NULL;
        EXPECT(rc == 1 && named, "%s a file %d s old headed \"%.*s\": exit %d, want 1 and an error saying \"%s\" (and \"%s\"): %s",
               cases[k].run_id ? cases[k].run_id : "no run id,", cases[k].age, (int)strcspn(cases[k].header, "\n"), cases[k].header, rc,
               cases[k].said[0], cases[k].said[1] ? cases[k].said[1] : "", msg);
    }
}

// A job restarted at once at the same path (a script's retry): the rendezvous file its crashed predecessor left is
// as new as this process by the clock, so only the run id tells it apart. Rank 1, started first, waits past it for
// its own rank 0's bytes (it once took the earlier job's, and NCCL hung on them), whether the earlier job's binary
// wrote a run id or was older. With a run id, this run's file is taken however old the clocks make it (a file
// server's clock behind this machine's).
static void test_file_rendezvous_restart(void) {
    char r[600], msg[1024];
    snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=file:%s", test_path("restart"));
    const char *earlier[] = {"train_clip rendezvous v2 rank=0 world=2 bytes=64 run=job-1\n", "train_clip rendezvous world=2 bytes=64\n"};
    for (int k = 0; k < 2; k++) {
        leftover("restart.0", earlier[k], 0, 1);
        Start r0 = {.vars = {"WORLD_SIZE=2", "RANK=0", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=5", "TRAIN_CLIP_RUN_ID=job-2"}, .broadcast = 1};
        Start r1 = {.vars = {"WORLD_SIZE=2", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=5", "TRAIN_CLIP_RUN_ID=job-2"}, .broadcast = 1};
        pid_t p1 = start_late(&r1, 0, "restart.err"), p0 = start_late(&r0, 500, "restart.err0");
        int rc1 = exit_code(p1), rc0 = exit_code(p0);
        EXPECT(rc0 == 0 && rc1 == 0, "job-2 with \"%.*s\" left at its path: rank 0 exit %d, rank 1 exit %d (3: it took the earlier "
               "job's bytes), want 0 0: %s", (int)strcspn(earlier[k], "\n"), earlier[k], rc0, rc1, text_of("restart.err"));
    }
    leftover("restart.0", "train_clip rendezvous v2 rank=0 world=2 bytes=64 run=job-2\n", 3600, 0);
    Start r1 = {.vars = {"WORLD_SIZE=2", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=1", "TRAIN_CLIP_RUN_ID=job-2"}, .broadcast = 1};
    int rc = start(&r1, msg, sizeof(msg));
    EXPECT(rc == 0, "job-2's own file, an hour old by the clock: exit %d, want 0: %s", rc, msg);
}

static int free_port(void) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(a);
    bind(s, (struct sockaddr *)&a, sizeof(a));
    getsockname(s, (struct sockaddr *)&a, &len);
    close(s);
    return ntohs(a.sin_port);
}

static void test_tcp_rendezvous(void) {
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", free_port());
    int rc[8];
    int ok = run_world(3, 3, addr, rc);
    EXPECT(ok == 3, "%d of 3 ranks got the broadcast (exit codes %d %d %d)", ok, rc[0], rc[1], rc[2]);
}

// Rank 0's address as a name or an IPv6 address: tcp:[::1]:PORT, torchrun's MASTER_ADDR=::1 (tcp:::1:PORT) and
// tcp:localhost:PORT. Skipped where this machine has no IPv6 loopback.
static void test_tcp_rendezvous_addresses(void) {
    int v6 = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 a = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    int have_v6 = v6 >= 0 && bind(v6, (struct sockaddr *)&a, sizeof(a)) == 0;
    if (v6 >= 0) close(v6);
    const char *forms[] = {"tcp:localhost:%d", "tcp:[::1]:%d", "tcp:::1:%d"};
    for (int k = 0; k < (have_v6 ? 3 : 1); k++) {
        char addr[64];
        snprintf(addr, sizeof(addr), forms[k], free_port());
        int rc[8];
        int ok = run_world(2, 2, addr, rc);
        EXPECT(ok == 2, "%s: %d of 2 ranks got the broadcast (exit codes %d %d)", addr, ok, rc[0], rc[1]);
    }
    if (!have_v6 && !test_failed_checks) SKIP("no IPv6 loopback here: only tcp:localhost tried");
}

// A rank of another job (another world size) that reaches this job's rank 0 (two jobs given one port): rank 0 stops
// naming it, rather than hand it this job's id.
static void test_tcp_rendezvous_other_job(void) {
    char r[64], msg[1024];
    snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=tcp:127.0.0.1:%d", free_port());
    Start other = {.vars = {"WORLD_SIZE=3", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=3"}, .broadcast = 1};
    pid_t pid = start_late(&other, 0, "other_job.err");
    Start s = {.vars = {"WORLD_SIZE=2", "RANK=0", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=3"}, .broadcast = 1};
    int rc = start(&s, msg, sizeof(msg)), rc_other = exit_code(pid);
    EXPECT(rc == 1 && strstr(msg, "world of 3"), "rank 0 of 2 reached by rank 1 of 3: exit %d, want 1 naming the world of 3: %s", rc, msg);
    EXPECT(rc_other == 1, "rank 1 of 3 did not stop with an error (exit %d)", rc_other);
}

// Two jobs of one world size given one port, each with its run id: job b's rank 1 reaches job a's rank 0 first.
// Rank 0 turns it away, naming it, and waits on for its own rank 1 (it once counted b's, which NCCL then joined to
// job a, and a's own rank 1 found no one); b's rank 1 stops naming the port and both ids.
static void test_tcp_rendezvous_two_jobs(void) {
    char r[64], port[16];
    snprintf(port, sizeof(port), "%d", free_port());
    snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=tcp:127.0.0.1:%s", port);
    Start a0 = {.vars = {"WORLD_SIZE=2", "RANK=0", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=5", "TRAIN_CLIP_RUN_ID=job-a"}, .broadcast = 1};
    Start a1 = {.vars = {"WORLD_SIZE=2", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=5", "TRAIN_CLIP_RUN_ID=job-a"}, .broadcast = 1};
    Start b1 = {.vars = {"WORLD_SIZE=2", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=5", "TRAIN_CLIP_RUN_ID=job-b"}, .broadcast = 1};
    pid_t pa0 = start_late(&a0, 0, "a0.err"), pb1 = start_late(&b1, 100, "b1.err");
    int rb1 = exit_code(pb1);  // a's own rank 1 only after b's is done with rank 0
    int ra1 = exit_code(start_late(&a1, 0, "a1.err")), ra0 = exit_code(pa0);
    const char *b_said = text_of("b1.err"), *a_said = text_of("a0.err");
    EXPECT(rb1 == 1 && strstr(b_said, port) && strstr(b_said, "job-a") && strstr(b_said, "not this run's job-b"),
           "job b's rank 1 at job a's rank 0: exit %d, want 1 and an error naming port %s, job-a and job-b: %s", rb1, port, b_said);
    EXPECT(ra0 == 0 && ra1 == 0, "job a: rank 0 exit %d, rank 1 exit %d, want 0 0: %s%s", ra0, ra1, a_said, text_of("a1.err"));
    EXPECT(strstr(a_said, "turned away rank 1 of run id job-b"), "job a's rank 0 did not name the rank it turned away: %s", a_said);
}

// Where the run id comes from, seen through a TCP rendezvous of two ranks: the same id lets rank 1 in, another stops it.
// TRAIN_CLIP_RUN_ID wins over the launcher's ids; slurm's step and requeue count and torchrun's run id and restart
// count each make another run; slurm's batch step and torchrun's default id "none" alone give none (the ranks then
// meet as before run ids).
static void test_run_id_sources(void) {
    struct { const char *env[2][4]; int same; } cases[] = {
        {{{"SLURM_JOB_ID=7", "SLURM_STEP_ID=0"}, {"SLURM_JOB_ID=7", "SLURM_STEP_ID=0"}}, 1},
        {{{"SLURM_JOB_ID=7", "SLURM_STEP_ID=0"}, {"SLURM_JOB_ID=7", "SLURM_STEP_ID=1"}}, 0},
        {{{"SLURM_JOB_ID=7", "SLURM_STEP_ID=0", "SLURM_RESTART_COUNT=1"}, {"SLURM_JOB_ID=7", "SLURM_STEP_ID=0"}}, 0},
        {{{"SLURM_JOB_ID=7", "SLURM_STEP_ID=4294967294"}, {"SLURM_JOB_ID=8", "SLURM_STEP_ID=4294967294"}}, 1},
        {{{"TORCHELASTIC_RUN_ID=r", "TORCHELASTIC_RESTART_COUNT=1"}, {"TORCHELASTIC_RUN_ID=r", "TORCHELASTIC_RESTART_COUNT=1"}}, 1},
        {{{"TORCHELASTIC_RUN_ID=r", "TORCHELASTIC_RESTART_COUNT=1"}, {"TORCHELASTIC_RUN_ID=r"}}, 0},
        {{{"TORCHELASTIC_RUN_ID=r"}, {"TORCHELASTIC_RUN_ID=q"}}, 0},
        {{{"TORCHELASTIC_RUN_ID=none"}, {"TORCHELASTIC_RUN_ID=none", "TORCHELASTIC_RESTART_COUNT=1"}}, 1},
        {{{"SLURM_JOB_ID=7", "SLURM_STEP_ID=0", "TORCHELASTIC_RUN_ID=none"},
          {"SLURM_JOB_ID=7", "SLURM_STEP_ID=0", "TORCHELASTIC_RUN_ID=none", "TORCHELASTIC_RESTART_COUNT=1"}}, 0},
        {{{"TRAIN_CLIP_RUN_ID=x", "SLURM_JOB_ID=7", "SLURM_STEP_ID=0"}, {"TRAIN_CLIP_RUN_ID=x", "SLURM_JOB_ID=7", "SLURM_STEP_ID=1"}}, 1},
        {{{"TRAIN_CLIP_RUN_ID=x"}, {"TRAIN_CLIP_RUN_ID=y"}}, 0},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        char r[64], env[256] = "";
        snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=tcp:127.0.0.1:%d", free_port());
        Start s[2] = {{.vars = {"WORLD_SIZE=2", "RANK=0", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=5"}, .broadcast = 1},
                      {.vars = {"WORLD_SIZE=2", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=5"}, .broadcast = 1}};
        for (int rank = 0; rank < 2; rank++)
            for (int i = 0; i < 4 && cases[k].env[rank][i]; i++) {
                s[rank].vars[4 + i] = cases[k].env[rank][i];
                snprintf(env + strlen(env), sizeof(env) - strlen(env), "%s%s ", rank ? "rank 1 " : "", cases[k].env[rank][i]);
            }
        pid_t p0 = start_late(&s[0], 0, "id0.err");
        int rc1 = exit_code(start_late(&s[1], 0, "id1.err"));
        if (rc1 != 0) kill(p0, SIGKILL);  // turned away: rank 0 would wait out its timeout for another rank 1
        int rc0 = exit_code(p0);
        const char *said = text_of("id1.err");
        if (cases[k].same) EXPECT(rc0 == 0 && rc1 == 0, "%s: exit codes %d %d, want 0 0 (one run): %s", env, rc0, rc1, said);
        else EXPECT(rc1 == 1 && strstr(said, "not this run's"), "%s: rank 1 exit %d, want 1 (two runs): %s", env, rc1, said);
    }
}

static void test_missing_peer_fails_fast(void) {
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", free_port());
    int rc[8];
    time_t t0 = time(NULL);
    int ok = run_world(3, 2, addr, rc);  // rank 2 never starts
    EXPECT(ok == 1 && rc[0] == 1, "rank 0 should fail (exit 1) waiting for rank 2: exit codes %d %d", rc[0], rc[1]);
    EXPECT(time(NULL) - t0 < 20, "took %ld s: the timeout was not honoured", (long)(time(NULL) - t0));
}

// Something on the rendezvous port that is not a train_clip rank 0: a listener that never answers (a rank connects,
// sends its number and waits for the id) and one whose queue is full (the connect itself waits: Linux retries the
// SYN for about two minutes). Either way the rank stops with an error within about its timeout, never hangs.
static void test_rendezvous_no_answer(void) {
    for (int full = 0; full < 2; full++) {
        int l = socket(AF_INET, SOCK_STREAM, 0), c = -1;
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        socklen_t len = sizeof(a);
        if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 0) || getsockname(l, (struct sockaddr *)&a, &len))
            fatal("listener: %s", strerror(errno));
        if (full && ((c = socket(AF_INET, SOCK_STREAM, 0)) < 0 || connect(c, (struct sockaddr *)&a, sizeof(a))))
            fatal("filling the listener's queue: %s", strerror(errno));
        char r[64], msg[1024];
        snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=tcp:127.0.0.1:%d", ntohs(a.sin_port));
        Start s = {.vars = {"WORLD_SIZE=2", "RANK=1", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=2"}, .broadcast = 1};
        time_t t0 = time(NULL);
        int rc = start(&s, msg, sizeof(msg));
        EXPECT(rc == 1 && time(NULL) - t0 <= 6, "rank 1 with %s rank 0: exit %d after %ld s (-1: hung), want 1 within the 2 s timeout: %s",
               full ? "a full queue at" : "a silent", rc, (long)(time(NULL) - t0), msg);
        close(l);
        if (c >= 0) close(c);
    }
}

// Rank 0 with a connection that never sends its rank (not a train_clip rank): an error within about the timeout.
static void test_rendezvous_silent_peer(void) {
    int port = free_port();
    pid_t pid = fork();
    if (pid == 0) {  // connects as soon as rank 0 listens, then says nothing
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        for (int k = 0; k < 200; k++) {
            int c = socket(AF_INET, SOCK_STREAM, 0);
            if (c >= 0 && connect(c, (struct sockaddr *)&a, sizeof(a)) == 0) sleep(30), _exit(0);
            if (c >= 0) close(c);
            usleep(50000);
        }
        _exit(1);
    }
    char r[64], msg[1024];
    snprintf(r, sizeof(r), "TRAIN_CLIP_RENDEZVOUS=tcp:127.0.0.1:%d", port);
    Start s = {.vars = {"WORLD_SIZE=2", "RANK=0", r, "TRAIN_CLIP_RENDEZVOUS_TIMEOUT=2"}, .broadcast = 1};
    time_t t0 = time(NULL);
    int rc = start(&s, msg, sizeof(msg));
    kill(pid, SIGKILL), waitpid(pid, NULL, 0);
    EXPECT(rc == 1 && time(NULL) - t0 <= 6, "rank 0 with a silent connection: exit %d after %ld s (-1: hung), want 1 within the 2 s timeout: %s",
           rc, (long)(time(NULL) - t0), msg);
}

// ---------------------------------------------------------------- launch scripts
// Each script is copied into a scratch tree beside stand-ins (mpirun, nvidia-smi, ldd, run_local.sh, train_clip)
// that write down how they were called, so that no launcher or training really starts.

static void stub(const char *name, const char *body) {
    put(name, body);
    if (chmod(test_path(name), 0755)) fatal("chmod %s: %s", test_path(name), strerror(errno));
}

// The shell command's exit code (-1: it did not exit).
static int sh(const char *cmd) {
    int st = system(cmd);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// train_multi_node.sh hosts h14: the config that exists (configs/vit_h_14.conf), one rank per GPU of each host line
// (comments and blank lines are not hosts), a hostfile path relative to where it was started.
static void test_multi_node_script(void) {
    put("mn/hosts", "# two nodes of 8 GPUs\nnode01 slots=8\n\nnode02 slots=8\n");
    stub("mn/tree/bin/mpirun", "#!/bin/sh\necho \"mpirun $*\" > \"$CALLS\"\n");
    char cmd[2048], want[600];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s/scripts %s/configs && cp scripts/train_multi_node.sh %s/scripts/ && cp configs/vit_h_14.conf "
             "%s/configs/ && cd %s && PATH=\"$PWD/tree/bin:$PATH\" CALLS=$PWD/calls bash tree/scripts/train_multi_node.sh hosts h14 "
             "--set steps=1 2>%s", test_path("mn/tree"), test_path("mn/tree"), test_path("mn/tree"), test_path("mn/tree"), test_path("mn"),
             test_path("mn/err"));
    int rc = sh(cmd);
    const char *calls = text_of("mn/calls");
    snprintf(want, sizeof(want), "--hostfile %s ", test_path("mn/hosts"));
    EXPECT(rc == 0 && strstr(calls, " -np 16 ") && strstr(calls, want) && strstr(calls, "-c configs/vit_h_14.conf ") &&
           strstr(calls, "--set steps=1"), "exit %d, mpirun called as: %s (stderr: %s)", rc, calls, text_of("mn/err"));
    put("mn/empty", "# nothing\n");
    snprintf(cmd, sizeof(cmd), "cd %s && rm -f calls && PATH=\"$PWD/tree/bin:$PATH\" CALLS=$PWD/calls bash tree/scripts/train_multi_node.sh "
             "empty h14 2>/dev/null", test_path("mn"));
    rc = sh(cmd);
    EXPECT(rc != 0 && !*text_of("mn/calls"), "a hostfile without hosts: exit %d, mpirun called as: %s", rc, text_of("mn/calls"));
}

// train_one_node.sh h14: mpirun when it is there and ./train_clip is built with MPI (ldd lists libmpi), else
// run_local.sh; the GPUs nvidia-smi lists (MIG lines are not GPUs); none listed is an error, not "-np 0".
static void test_one_node_script(void) {
    stub("on/scripts/run_local.sh", "#!/bin/sh\necho \"run_local $*\" > \"$CALLS\"\n");
    stub("on/train_clip", "#!/bin/sh\n");
    stub("on/bin/mpirun", "#!/bin/sh\necho \"mpirun $*\" > \"$CALLS\"\n");
    stub("on/bin/ldd", "#!/bin/sh\n[ \"$MPI\" = 1 ] && echo '\tlibmpi.so.40 => /usr/lib/libmpi.so.40'\nexit 0\n");
    stub("on/bin/nvidia-smi", "#!/bin/sh\ni=0\nwhile [ $i -lt $GPUS ]; do echo \"GPU $i: NVIDIA H100 (UUID: GPU-$i)\"; "
         "echo \"  MIG 1g.10gb Device 0: (UUID: MIG-$i)\"; i=$((i + 1)); done\n");
    char cmd[1024];
    snprintf(cmd, sizeof(cmd), "mkdir -p %s && cp scripts/train_one_node.sh %s/", test_path("on/scripts"), test_path("on/scripts"));
    EXPECT(sh(cmd) == 0, "%s failed", cmd);
    struct { const char *env, *args; int rc; const char *want; } cases[] = {
        {"GPUS=2 MPI=1", "h14", 0, "mpirun"},  {"GPUS=2 MPI=0", "h14", 0, "run_local 2 ./train_clip -c configs/vit_h_14.conf"},
        {"GPUS=2 MPI=1", "h14 --set x=1", 0, " -np 2 "}, {"GPUS=2 MPI=1", "b16 4 --set x=1", 0, " -np 4 "},
        {"GPUS=0 MPI=1", "h14", 2, ""},      {"GPUS=2 MPI=1", "h14 x4", 2, ""},
    };
    for (size_t k = 0; k < sizeof(cases) / sizeof(cases[0]); k++) {
        snprintf(cmd, sizeof(cmd), "cd %s && rm -f calls && PATH=\"$PWD/bin:$PATH\" CALLS=$PWD/calls %s bash scripts/train_one_node.sh %s 2>err",
                 test_path("on"), cases[k].env, cases[k].args);
        int rc = sh(cmd);
        const char *calls = text_of("on/calls");
        EXPECT(rc == cases[k].rc && (*cases[k].want ? strstr(calls, cases[k].want) != NULL : !*calls),
               "%s train_one_node.sh %s: exit %d (want %d), called: \"%s\" (want \"%s\"); stderr: %s", cases[k].env, cases[k].args, rc,
               cases[k].rc, calls, cases[k].want, text_of("on/err"));
    }
}

// run_local.sh: N must be a count of 1 or more; the ranks of a launch share one TRAIN_CLIP_RUN_ID, the next launch
// has another (not one left in the caller's environment); Ctrl-C or a TERM to the script reaches the ranks (they run
// in the background, where a script's children ignore SIGINT) and the script waits for them.
static void test_run_local_script(void) {
    const char *bad[] = {"0", "x", "08", "-1", "''"};
    for (size_t k = 0; k < sizeof(bad) / sizeof(bad[0]); k++) {
        char cmd[256];
        snprintf(cmd, sizeof(cmd), "bash scripts/run_local.sh %s true 2>/dev/null", bad[k]);
        int rc = sh(cmd);
        EXPECT(rc == 2, "run_local.sh %s true: exit %d, want 2 (usage)", bad[k], rc);
    }
    char cmd[512], ids[4][128] = {"", "", "", ""};
    snprintf(cmd, sizeof(cmd), "for i in 1 2; do TRAIN_CLIP_RUN_ID=stale bash scripts/run_local.sh 2 sh -c 'echo \"$TRAIN_CLIP_RUN_ID\"' "
             ">> %s; done", test_path("rl_ids"));
    int rc = sh(cmd);
    sscanf(text_of("rl_ids"), "%127s %127s %127s %127s", ids[0], ids[1], ids[2], ids[3]);
    EXPECT(rc == 0 && *ids[0] && *ids[2] && strcmp(ids[0], "stale") && !strcmp(ids[0], ids[1]) && !strcmp(ids[2], ids[3]) &&
           strcmp(ids[0], ids[2]), "two launches of run_local.sh 2 (exit %d): the ranks' TRAIN_CLIP_RUN_ID were %s %s, then %s %s; want "
           "one fresh id per launch", rc, ids[0], ids[1], ids[2], ids[3]);
    for (int k = 0; k < 2; k++) {
        char cmd[1024];
        const char *pids = test_path(k ? "rl_pids_int" : "rl_pids_term");
        // the ranks write their process ids and sleep; the script gets the signal; then no rank may be left. Job control
        // (set -m) so that the script, started in the background, does not ignore SIGINT as it would without.
        snprintf(cmd, sizeof(cmd), "bash -c 'set -m; bash scripts/run_local.sh 2 sh -c \"echo \\$\\$ >> %s; exec sleep 30\" & p=$!; "
                 "for i in $(seq 100); do [ \"$(cat %s 2>/dev/null | wc -l)\" = 2 ] && break; sleep 0.1; done; sleep 0.2; kill -%s $p; "
                 "wait $p; left=0; for q in $(cat %s); do if kill -0 $q 2>/dev/null; then left=1; kill $q; fi; done; exit $left' 2>/dev/null",
                 pids, pids, k ? "INT" : "TERM", pids);
        time_t t0 = time(NULL);
        int rc = sh(cmd);
        EXPECT(rc == 0 && time(NULL) - t0 < 10, "run_local.sh sent SIG%s: %s after %ld s", k ? "INT" : "TERM",
               rc ? "its ranks were left running" : "they stopped", (long)(time(NULL) - t0));
    }
}

static const char *expand_cat(const char *path) {
    static char cmd[600];
    snprintf(cmd, sizeof(cmd), "tail -20 %s", path);
    return cmd;
}

static void test_mpi_start(void) {
#ifndef HAVE_MPI
    SKIP("built without MPI");
#else
    if (system("command -v mpirun > /dev/null 2>&1") != 0) SKIP("mpirun not found");
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "mpirun %s --oversubscribe -np 3 build/tests/test_distributed --mpi-child > %s 2>&1",
             getuid() == 0 ? "--allow-run-as-root" : "", test_path("mpi.log"));
    int st = system(cmd);
    if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) system(expand_cat(test_path("mpi.log")));
    EXPECT(WIFEXITED(st) && WEXITSTATUS(st) == 0, "mpirun -np 3 failed (status %d); its output is above", st);
#endif
}

int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "--mpi-child")) return child_main();
    RUN(test_single_process_default);
    RUN(test_cpu_slices);
    RUN(test_cpu_lists);
    RUN(test_cgroup_cpuset);
    RUN(test_cgroup_here);
    RUN(test_cpu_placement);
    RUN(test_place_threads);
    RUN(test_bad_environment);
    RUN(test_good_environment);
    RUN(test_launcher_without_ranks);
    RUN(test_bad_rendezvous);
    RUN(test_file_rendezvous);
    RUN(test_file_rendezvous_leftovers);
    RUN(test_file_rendezvous_restart);
    RUN(test_tcp_rendezvous);
    RUN(test_tcp_rendezvous_addresses);
    RUN(test_tcp_rendezvous_other_job);
    RUN(test_tcp_rendezvous_two_jobs);
    RUN(test_run_id_sources);
    RUN(test_missing_peer_fails_fast);
    RUN(test_rendezvous_no_answer);
    RUN(test_rendezvous_silent_peer);
    RUN(test_mpi_start);
    RUN(test_multi_node_script);
    RUN(test_one_node_script);
    RUN(test_run_local_script);
    TEST_EXIT();
}
