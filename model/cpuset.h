// cpuset.h: the CPUs a process may run on, for placing a node's ranks (dist_place_threads): CPU lists as
// text ("0-3,8-11", as taskset, /proc and the cgroup files write them), the set the process's cgroup allows
// (a container's, a Kubernetes pod's or a slurm job's cpuset) and local rank r of n's share of it.
// Linux only. cpu_set_t needs _GNU_SOURCE defined before the first #include of the including file.
#pragma once
#ifndef _GNU_SOURCE
#error "cpuset.h needs _GNU_SOURCE defined before the first #include (cpu_set_t)"
#endif
#include <sched.h>
#include <stddef.h>

// "0-3,8-11" (one '\n' may end it) into set: 0, or -1 for an empty or malformed list or a CPU >= CPU_SETSIZE.
int cpuset_parse(const char *text, cpu_set_t *set);
// The set as such a list (what cpuset_parse reads), cut short if buf is too small.
void cpuset_print(char *buf, size_t size, const cpu_set_t *set);
// The CPUs this process's cgroup allows: 0, or -1 when no cpuset file could be read (then use the online CPUs).
int cpuset_allowed(cpu_set_t *set);
// cpuset_allowed's work on given text: `cgroups` as /proc/self/cgroup reads, cgroup file systems under `root`
// (/sys/fs/cgroup). cgroup v1's cpuset hierarchy (root/cpuset, cpuset.cpus) wins over v2's (root,
// cpuset.cpus.effective; a hybrid system's v2 hierarchy has no cpuset). The process's cgroup, or its nearest
// ancestor that has the file: in v2 a cgroup without the cpuset controller has its parent's CPUs, and a
// container without its own cgroup namespace lists the host's path but has its own cgroup at the mount's root.
int cpuset_from_cgroup(const char *cgroups, const char *root, cpu_set_t *set);
// Where local rank `rank` of `size` runs, given how many CPUs its cgroup allows (`allowed`) and its affinity.
// An affinity with fewer CPUs was set by the launcher (mpirun's binding, slurm's --cpu-bind, taskset): it is
// kept (mine = affinity) and this returns 1. Otherwise every rank of the node started with the same set:
// mine = slice rank of size of it (dist_slice over its CPUs in order), and this returns 0.
int cpuset_place(int allowed, const cpu_set_t *affinity, int rank, int size, cpu_set_t *mine);
