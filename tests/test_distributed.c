// test_distributed.c: process roles and the bootstrap broadcast with real processes on this machine:
// environment starts (RANK / WORLD_SIZE) with a file and a TCP (loopback) rendezvous, a missing peer
// that must end in an error naming it within the timeout (never a hang), and, when built with MPI and
// mpirun exists, an MPI start with broadcast, all-reduce and all-gather.
#define _GNU_SOURCE  // sched_getaffinity
#include <netinet/in.h>
#include <omp.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../model/distributed.h"
#include "../model/utils.h"
#include "test.h"

// The child's whole life: join, receive rank 0's 64 bytes, check them. Exit code 0 = all good. The bytes start
// with '\n' and ' ' (as an NCCL id may): the file rendezvous once lost such a leading byte to its header's parsing.
static int child_main(void) {
    Dist d;
    dist_init(&d);
    unsigned char buf[64];
    for (int i = 0; i < 64; i++) buf[i] = d.rank == 0 ? (unsigned char)(i * 22 + 10) : 0;
    dist_broadcast(&d, buf, sizeof(buf));
    for (int i = 0; i < 64; i++)
        if (buf[i] != (unsigned char)(i * 22 + 10)) return 3;
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

// A second rank of two on this machine, started without binding, keeps its half of the CPUs and that many
// OpenMP threads (a child process: the binding is for the rest of its life).
static void test_place_threads(void) {
    cpu_set_t set;
    sched_getaffinity(0, sizeof(set), &set);
    int online = (int)sysconf(_SC_NPROCESSORS_ONLN);
    if (CPU_COUNT(&set) < online || online < 2 || getenv("OMP_NUM_THREADS")) {
        SKIP("this process is bound to %d of %d CPUs or OMP_NUM_THREADS is set", CPU_COUNT(&set), online);
        return;
    }
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
        int lo, hi, want = online / 2;
        dist_slice(online, 1, 2, &lo, &hi);
        int ok = CPU_COUNT(&mine) == hi - lo && CPU_ISSET(online - 1, &mine) && !CPU_ISSET(0, &mine);
        _exit(!ok ? 1 : omp_get_max_threads() != want ? 2 : 0);
    }
    int st;
    waitpid(pid, &st, 0);
    int rc = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    EXPECT(rc == 0, "local rank 1 of 2: %s (exit %d)", rc == 1 ? "not bound to the upper half of the CPUs" : "wrong OpenMP thread count", rc);
}

static void test_file_rendezvous(void) {
    char path[128];
    snprintf(path, sizeof(path), "file:%s", test_path("rendezvous"));
    int rc[8];
    int ok = run_world(4, 4, path, rc);
    EXPECT(ok == 4, "%d of 4 ranks got the broadcast (exit codes %d %d %d %d)", ok, rc[0], rc[1], rc[2], rc[3]);
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

static void test_missing_peer_fails_fast(void) {
    char addr[64];
    snprintf(addr, sizeof(addr), "tcp:127.0.0.1:%d", free_port());
    int rc[8];
    time_t t0 = time(NULL);
    int ok = run_world(3, 2, addr, rc);  // rank 2 never starts
    EXPECT(ok == 1 && rc[0] == 1, "rank 0 should fail (exit 1) waiting for rank 2: exit codes %d %d", rc[0], rc[1]);
    EXPECT(time(NULL) - t0 < 20, "took %ld s: the timeout was not honoured", (long)(time(NULL) - t0));
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
    RUN(test_place_threads);
    RUN(test_file_rendezvous);
    RUN(test_tcp_rendezvous);
    RUN(test_missing_peer_fails_fast);
    RUN(test_mpi_start);
    TEST_EXIT();
}
