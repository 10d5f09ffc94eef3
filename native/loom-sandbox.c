/*
 * loom-sandbox: starts one embedded workload in its sandbox in a single exec, for Loom running as
 * root. It does what the shell shim, nsenter, bubblewrap, setpriv and env did one after another
 * (six execs and a mount table read back for every bind): joins the worker's cgroups, enters the
 * gang's network namespace, makes new mount, PID, IPC, UTS and cgroup namespaces, builds the
 * sandbox's root (the same operations, in the same order, as the bubblewrap arguments Loom
 * builds: src/platforms/embedded/sandbox.ts), drops to the project's uid with no capabilities and
 * no_new_privs, and execs the workload, with a PID 1 that reaps and a monitor outside that
 * records the exit code where the runtime reads it ({ "exit-code": N }, as bwrap's
 * --json-status-fd).
 *
 * Usage: loom-sandbox [--status-file F] [--cgroup-procs P]... [--netns F] [--setuid U --setgid G]
 *        BWRAP-OPTIONS... -- COMMAND...
 * where BWRAP-OPTIONS is the subset of bubblewrap's that sandbox.ts emits in privileged mode:
 * --unshare-{pid,ipc,uts,cgroup-try} (always done), --unshare-net (loopback only), --hostname, --ro-bind, --ro-bind-try, --bind,
 * --bind-try, --dev-bind-try, --symlink, --proc, --dev, --tmpfs, --dir, --perms, --remount-ro,
 * --chdir. Anything else is refused (exit 125): a fence this launcher does not know is never
 * silently skipped.
 *
 * Bind mounts are recursive and their flags (read-only, nosuid, nodev) are set on the whole
 * tree with one mount_setattr(2) (Linux 5.12), where bwrap re-reads /proc/self/mountinfo for
 * every bind to find the submounts; their sources are copied first with open_tree(2) and
 * attached with move_mount(2), so the root takes one pivot_root where bwrap's takes two. Loom
 * falls back to bwrap where any of these calls is missing (the start-up probe fails).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <linux/capability.h>
#include <linux/mount.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef MOUNT_ATTR_RDONLY
#define MOUNT_ATTR_RDONLY 0x00000001
#define MOUNT_ATTR_NOSUID 0x00000002
#define MOUNT_ATTR_NODEV 0x00000004
struct mount_attr {
  unsigned long long attr_set, attr_clr, propagation, userns_fd;
};
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef SYS_open_tree
#define SYS_open_tree 428
#endif
#ifndef SYS_move_mount
#define SYS_move_mount 429
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef AT_RECURSIVE
#define AT_RECURSIVE 0x8000
#endif

/* The exit code for "the sandbox could not be made" (the shim's 125, as env's and bwrap's own). */
#define FAIL 125

static int status_fd = -1;

static void record(int code) {
  if (status_fd < 0) return;
  char buf[64];
  int n = snprintf(buf, sizeof buf, "{ \"exit-code\": %d }\n", code);
  if (write(status_fd, buf, n) < 0) { /* nothing more to do */ }
}

static void die(const char *fmt, ...) {
  int e = errno;
  va_list ap;
  fputs("loom-sandbox: ", stderr);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  if (e) fprintf(stderr, ": %s", strerror(e));
  fputc('\n', stderr);
  record(FAIL);
  _exit(FAIL);
}

enum op_kind { OP_BIND, OP_SYMLINK, OP_PROC, OP_DEV, OP_TMPFS, OP_DIR, OP_REMOUNT_RO };
enum { BIND_RO = 1, BIND_TRY = 2, BIND_DEVICES = 4 };

struct op {
  enum op_kind kind;
  const char *src; /* resolved source (binds), link target (symlinks) */
  int tree;        /* binds: a detached copy of the source's tree (open_tree), -1 where it is missing */
  const char *dest;
  int flags;
  int perms;
};

static struct op *ops;
static int nops;

static void add(enum op_kind kind, const char *src, const char *dest, int flags, int perms) {
  ops = realloc(ops, sizeof *ops * (nops + 1));
  if (!ops) die("out of memory");
  ops[nops++] = (struct op){kind, src, -1, dest, flags, perms};
}

static unsigned long number(const char *s, const char *what) {
  char *end;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || end == s) {
    errno = 0;
    die("bad %s: %s", what, s);
  }
  return v;
}

static int write_file(const char *path, const char *data) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  ssize_t n = write(fd, data, strlen(data));
  int e = errno;
  close(fd);
  errno = e;
  return n == (ssize_t)strlen(data) ? 0 : -1;
}

/* mkdir -p, each made dir with `mode` (umask cleared by the caller). */
static void ensure_dir(const char *path, mode_t mode) {
  char buf[PATH_MAX];
  if (strlen(path) >= sizeof buf) die("path too long: %s", path);
  strcpy(buf, path);
  for (char *p = buf + 1;; p++) {
    if (*p == '/' || *p == 0) {
      char c = *p;
      *p = 0;
      struct stat st;
      if (stat(buf, &st) != 0 && mkdir(buf, mode) != 0 && errno != EEXIST) die("mkdir %s", buf);
      *p = c;
      if (!c) break;
    }
  }
  errno = 0;
}

/* The mount point for a bind: a directory for a directory, an empty file for anything else. */
static void ensure_mountpoint(const char *dest, int is_dir) {
  struct stat st;
  if (lstat(dest, &st) == 0) return;
  char parent[PATH_MAX];
  snprintf(parent, sizeof parent, "%s", dest);
  char *slash = strrchr(parent, '/');
  if (slash && slash != parent) {
    *slash = 0;
    ensure_dir(parent, 0755);
  }
  if (is_dir) {
    if (mkdir(dest, 0755) != 0 && errno != EEXIST) die("mkdir %s", dest);
  } else {
    int fd = open(dest, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
    if (fd < 0) die("creating %s", dest);
    close(fd);
  }
  errno = 0;
}

static void set_attrs(const char *dest, unsigned long long set) {
  struct mount_attr attr = {.attr_set = set};
  if (syscall(SYS_mount_setattr, AT_FDCWD, dest, AT_RECURSIVE, &attr, sizeof attr) != 0)
    die("mount_setattr %s", dest);
}

/* Paths inside the new root while it is built (cwd is the base tmpfs, as bwrap's). */
static char *in_new(const char *path) {
  char *out;
  if (asprintf(&out, "newroot%s", path) < 0) die("out of memory");
  return out;
}

/* Each bind's source, copied (recursively, as a bind with MS_REC) while the host's tree is still
   uncovered: the base tmpfs then goes over /tmp and the copies are attached from there, so the
   new root needs one pivot_root, where bubblewrap's order (pivot into the base, the host's tree
   at /oldroot, then pivot again) has two, each a walk over every task on the machine. */
static void copy_sources(void) {
  for (int i = 0; i < nops; i++) {
    struct op *op = &ops[i];
    if (op->kind != OP_BIND) continue;
    op->tree = (int)syscall(SYS_open_tree, AT_FDCWD, op->src, OPEN_TREE_CLONE | O_CLOEXEC | AT_RECURSIVE);
    if (op->tree < 0) {
      if ((op->flags & BIND_TRY) && errno == ENOENT) {
        errno = 0;
        continue;
      }
      die("cannot bind %s", op->src);
    }
  }
}

static void bind_op(const struct op *op) {
  if (op->tree < 0) return; /* a -try source that is not there */
  struct stat st;
  if (fstat(op->tree, &st) != 0) die("cannot bind %s", op->src);
  char *dest = in_new(op->dest);
  ensure_mountpoint(dest, S_ISDIR(st.st_mode));
  if (syscall(SYS_move_mount, op->tree, "", AT_FDCWD, dest, MOVE_MOUNT_F_EMPTY_PATH) != 0)
    die("bind %s", op->src);
  close(op->tree);
  unsigned long long set = MOUNT_ATTR_NOSUID;
  if (!(op->flags & BIND_DEVICES)) set |= MOUNT_ATTR_NODEV;
  if (op->flags & BIND_RO) set |= MOUNT_ATTR_RDONLY;
  set_attrs(dest, set);
  free(dest);
}

static void tmpfs(const char *dest, int perms) {
  char opt[32];
  snprintf(opt, sizeof opt, "mode=%#o", perms);
  if (mount("tmpfs", dest, "tmpfs", MS_NOSUID | MS_NODEV, opt) != 0) die("tmpfs on %s", dest);
}

static void proc(const char *dest) {
  ensure_dir(dest, 0755);
  if (mount("proc", dest, "proc", MS_NOSUID | MS_NOEXEC | MS_NODEV, NULL) != 0) die("proc on %s", dest);
  /* As bwrap: the writable odd corners of /proc (sysrq-trigger shuts the machine down) read-only. */
  static const char *const cover[] = {"sys", "sysrq-trigger", "irq", "bus"};
  for (size_t i = 0; i < sizeof cover / sizeof *cover; i++) {
    char sub[PATH_MAX];
    snprintf(sub, sizeof sub, "%s/%s", dest, cover[i]);
    if (access(sub, W_OK) != 0) {
      errno = 0;
      continue;
    }
    if (mount(sub, sub, NULL, MS_SILENT | MS_BIND | MS_REC, NULL) != 0) die("bind %s", sub);
    set_attrs(sub, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
  }
}

static void dev(const char *dest) {
  ensure_dir(dest, 0755);
  tmpfs(dest, 0755);
  static const char *const nodes[] = {"null", "zero", "full", "random", "urandom", "tty"};
  char a[PATH_MAX], b[PATH_MAX];
  for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++) {
    snprintf(a, sizeof a, "%s/%s", dest, nodes[i]);
    snprintf(b, sizeof b, "/dev/%s", nodes[i]);
    int fd = open(a, O_WRONLY | O_CREAT | O_CLOEXEC, 0444);
    if (fd < 0) die("creating %s", a);
    close(fd);
    if (mount(b, a, NULL, MS_SILENT | MS_BIND, NULL) != 0) die("bind %s", b);
    set_attrs(a, MOUNT_ATTR_NOSUID);
  }
  static const char *const links[][2] = {{"/proc/self/fd/0", "stdin"},  {"/proc/self/fd/1", "stdout"},
                                         {"/proc/self/fd/2", "stderr"}, {"/proc/self/fd", "fd"},
                                         {"/proc/kcore", "core"},       {"pts/ptmx", "ptmx"}};
  for (size_t i = 0; i < sizeof links / sizeof *links; i++) {
    snprintf(a, sizeof a, "%s/%s", dest, links[i][1]);
    if (symlink(links[i][0], a) != 0) die("symlink %s", a);
  }
  snprintf(a, sizeof a, "%s/shm", dest);
  if (mkdir(a, 0755) != 0) die("mkdir %s", a);
  snprintf(a, sizeof a, "%s/pts", dest);
  if (mkdir(a, 0755) != 0) die("mkdir %s", a);
  if (mount("devpts", a, "devpts", MS_NOSUID | MS_NOEXEC, "newinstance,ptmxmode=0666,mode=620") != 0)
    die("devpts on %s", a);
}

static void build_root(void) {
  for (int i = 0; i < nops; i++) {
    const struct op *op = &ops[i];
    char *dest = in_new(op->dest);
    switch (op->kind) {
      case OP_BIND:
        bind_op(op);
        break;
      case OP_SYMLINK: {
        char parent[PATH_MAX];
        snprintf(parent, sizeof parent, "%s", dest);
        char *slash = strrchr(parent, '/');
        if (slash) *slash = 0;
        ensure_dir(parent, 0755);
        if (symlink(op->src, dest) != 0) {
          /* As bwrap: an existing link to the same target is fine. */
          char have[PATH_MAX];
          ssize_t n = readlink(dest, have, sizeof have - 1);
          if (n < 0 || (have[n] = 0, strcmp(have, op->src) != 0)) die("symlink %s", op->dest);
          errno = 0;
        }
        break;
      }
      case OP_PROC:
        proc(dest);
        break;
      case OP_DEV:
        dev(dest);
        break;
      case OP_TMPFS:
        ensure_dir(dest, 0755);
        tmpfs(dest, op->perms);
        break;
      case OP_DIR: {
        /* As bwrap's --dir: parents 0755, the last with --perms's mode; one already there is left. */
        struct stat st;
        if (stat(dest, &st) != 0) {
          char parent[PATH_MAX];
          snprintf(parent, sizeof parent, "%s", dest);
          char *slash = strrchr(parent, '/');
          if (slash) *slash = 0;
          ensure_dir(parent, 0755);
          if (mkdir(dest, op->perms >= 0 ? op->perms : 0755) != 0 && errno != EEXIST) die("mkdir %s", op->dest);
          errno = 0;
        } else if (!S_ISDIR(st.st_mode)) {
          errno = ENOTDIR;
          die("--dir %s", op->dest);
        }
        break;
      }
      case OP_REMOUNT_RO:
        set_attrs(dest, MOUNT_ATTR_RDONLY);
        break;
    }
    free(dest);
  }
}

/* A new network namespace's loopback, up (as bwrap's --unshare-net). */
static void loopback_up(void) {
  int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  struct ifreq r;
  memset(&r, 0, sizeof r);
  strcpy(r.ifr_name, "lo");
  if (fd < 0 || ioctl(fd, SIOCGIFFLAGS, &r) != 0) die("reading lo");
  r.ifr_flags |= IFF_UP;
  if (ioctl(fd, SIOCSIFFLAGS, &r) != 0) die("bringing lo up");
  close(fd);
}

/* Drops everything: no groups, the project's uid and gid, no capabilities in any set. */
static void drop(uid_t uid, gid_t gid) {
  int last = CAP_LAST_CAP;
  int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
  if (fd >= 0) {
    char buf[16] = {0};
    if (read(fd, buf, sizeof buf - 1) > 0) last = atoi(buf);
    close(fd);
  }
  for (int c = 0; c <= last; c++)
    if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) != 0 && errno != EINVAL) die("dropping capability %d", c);
  if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
    die("clearing ambient capabilities");
  if (setgroups(0, NULL) != 0) die("setgroups");
  if (setresgid(gid, gid, gid) != 0) die("setresgid");
  if (setresuid(uid, uid, uid) != 0) die("setresuid");
  /* From root to another uid the kernel clears permitted and effective; inheritable too: */
  struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
  struct __user_cap_data_struct d[2] = {{0}};
  if (syscall(SYS_capset, &h, d) != 0) die("capset");
  errno = 0;
}

int main(int argc, char **argv) {
  const char *hostname = NULL, *chdir_to = NULL, *netns = NULL;
  int unshare_net = 0;
  const char **cgroups = calloc(argc, sizeof *cgroups);
  int ncgroups = 0;
  long uid = -1, gid = -1;
  int perms = -1;
  int i = 1;
  for (; i < argc; i++) {
    const char *a = argv[i];
    int left = argc - i - 1;
#define NEED(n)                                              \
  if (left < (n)) {                                          \
    errno = 0;                                               \
    die("%s takes %d argument%s", a, n, n > 1 ? "s" : ""); \
  }
    if (strcmp(a, "--") == 0) {
      i++;
      break;
    } else if (strcmp(a, "--status-file") == 0) {
      NEED(1);
      status_fd = open(argv[++i], O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
      if (status_fd < 0) die("opening %s", argv[i]);
    } else if (strcmp(a, "--cgroup-procs") == 0) {
      NEED(1);
      cgroups[ncgroups++] = argv[++i];
    } else if (strcmp(a, "--netns") == 0) {
      NEED(1);
      netns = argv[++i];
    } else if (strcmp(a, "--setuid") == 0) {
      NEED(1);
      uid = (long)number(argv[++i], "uid");
    } else if (strcmp(a, "--setgid") == 0) {
      NEED(1);
      gid = (long)number(argv[++i], "gid");
    } else if (strcmp(a, "--unshare-pid") == 0 || strcmp(a, "--unshare-ipc") == 0 ||
               strcmp(a, "--unshare-uts") == 0 || strcmp(a, "--unshare-cgroup-try") == 0) {
      /* always */
    } else if (strcmp(a, "--unshare-net") == 0) {
      unshare_net = 1;
    } else if (strcmp(a, "--hostname") == 0) {
      NEED(1);
      hostname = argv[++i];
    } else if (strcmp(a, "--chdir") == 0) {
      NEED(1);
      chdir_to = argv[++i];
    } else if (strcmp(a, "--perms") == 0) {
      NEED(1);
      char *end;
      perms = (int)strtol(argv[++i], &end, 8);
      if (*end || perms < 0 || perms > 07777) die("bad --perms %s", argv[i]);
    } else if (strcmp(a, "--ro-bind") == 0 || strcmp(a, "--ro-bind-try") == 0 ||
               strcmp(a, "--bind") == 0 || strcmp(a, "--bind-try") == 0 ||
               strcmp(a, "--dev-bind-try") == 0) {
      NEED(2);
      int flags = (strstr(a, "ro-") ? BIND_RO : 0) | (strstr(a, "-try") ? BIND_TRY : 0) |
                  (strstr(a, "dev-") ? BIND_DEVICES : 0);
      /* Sources are resolved in the host's tree (as bwrap does) before it becomes /oldroot. */
      char *src = realpath(argv[i + 1], NULL);
      if (!src) {
        if (!(flags & BIND_TRY) || errno != ENOENT) die("cannot bind %s", argv[i + 1]);
        errno = 0;
        i += 2;
        continue;
      }
      add(OP_BIND, src, argv[i + 2], flags, -1);
      i += 2;
    } else if (strcmp(a, "--symlink") == 0) {
      NEED(2);
      add(OP_SYMLINK, argv[i + 1], argv[i + 2], 0, -1);
      i += 2;
    } else if (strcmp(a, "--proc") == 0 || strcmp(a, "--dev") == 0 || strcmp(a, "--dir") == 0 ||
               strcmp(a, "--tmpfs") == 0 || strcmp(a, "--remount-ro") == 0) {
      NEED(1);
      enum op_kind k = a[2] == 'p' ? OP_PROC
                       : strcmp(a, "--dev") == 0 ? OP_DEV
                       : a[2] == 'd'             ? OP_DIR
                       : a[2] == 't'             ? OP_TMPFS
                                                 : OP_REMOUNT_RO;
      int p = k == OP_TMPFS ? (perms >= 0 ? perms : 0755) : k == OP_DIR ? perms : -1;
      add(k, NULL, argv[++i], 0, p);
      perms = -1;
    } else {
      errno = 0;
      die("unknown option %s (this launcher refuses what it does not enforce)", a);
    }
  }
  if (i >= argc) {
    errno = 0;
    die("no command after --");
  }
  if (unshare_net && netns) {
    errno = 0;
    die("--unshare-net and --netns exclude each other");
  }
  if ((uid < 0) != (gid < 0)) {
    errno = 0;
    die("--setuid and --setgid go together");
  }
  if (getuid() != 0) {
    errno = 0;
    die("runs as root only (unprivileged Loom uses bubblewrap)");
  }

  /* 1. The worker's cgroups, joined before anything is forked: every process below is in them.
     "0" is this thread, and this launcher has one: written to a v1 hierarchy's `tasks` file (what
     cgroups.ts names there), the kernel moves it without taking the global threadgroup lock for
     writing, whose RCU grace period made the first write of every start wait 8-14 ms on a busy
     machine (a pid written to cgroup.procs takes it; v2's cgroup.procs still does). */
  for (int c = 0; c < ncgroups; c++)
    if (write_file(cgroups[c], "0") != 0) die("joining %s", cgroups[c]);
  /* 2. The gang's network namespace. */
  if (netns) {
    int fd = open(netns, O_RDONLY | O_CLOEXEC);
    if (fd < 0 || setns(fd, CLONE_NEWNET) != 0) die("entering %s", netns);
    close(fd);
  }
  /* The monitor outlives a stop's SIGTERM (sent to the whole process group): the workload ends
     gracefully and its code is still recorded. The workload gets the default actions back. */
  signal(SIGTERM, SIG_IGN);
  signal(SIGINT, SIG_IGN);

  /* 3. New namespaces; the child is PID 1 of its own. */
  pid_t child = (pid_t)syscall(SYS_clone, CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWIPC | CLONE_NEWUTS |
                                              CLONE_NEWCGROUP | (unshare_net ? CLONE_NEWNET : 0) | SIGCHLD,
                               NULL, NULL, NULL, NULL);
  if (child < 0) die("clone");
  if (child > 0) {
    int st;
    while (waitpid(child, &st, 0) < 0)
      if (errno != EINTR) die("waitpid");
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    record(code);
    return code;
  }

  /* PID 1: builds the root from the same operations as bwrap, in a tmpfs over /tmp (the sources
     copied before it covers anything, copy_sources), pivots into it once and unmounts the host's
     tree. */
  if (status_fd >= 0) {
    close(status_fd);
    status_fd = -1;
  }
  mode_t old_umask = umask(0);
  if (mount(NULL, "/", NULL, MS_SILENT | MS_SLAVE | MS_REC, NULL) != 0) die("making / a slave");
  copy_sources();
  if (mount("tmpfs", "/tmp", "tmpfs", MS_NODEV | MS_NOSUID, NULL) != 0) die("tmpfs for the root");
  if (chdir("/tmp") != 0) die("chdir");
  if (mkdir("newroot", 0755) != 0) die("mkdir newroot");
  if (mount("newroot", "newroot", NULL, MS_SILENT | MS_BIND | MS_REC, NULL) != 0) die("newroot");
  build_root();
  /* The host's tree (the base tmpfs with it) goes under the new root, then away. */
  if (chdir("newroot") != 0) die("chdir newroot");
  if (syscall(SYS_pivot_root, ".", ".") != 0) die("pivot_root");
  if (umount2(".", MNT_DETACH) != 0 || chdir("/") != 0) die("unmounting the host's tree");
  if (unshare_net) loopback_up();
  if (hostname && sethostname(hostname, strlen(hostname)) != 0) die("sethostname");
  /* As bwrap: the caller's umask back, and PWD where the workload starts. */
  umask(old_umask);
  if (chdir_to && chdir(chdir_to) != 0) die("chdir %s", chdir_to);
  if (setenv("PWD", chdir_to ? chdir_to : "/", 1) != 0) die("setenv PWD");
  errno = 0;

  /* The workload is PID 2; PID 1 reaps and ends with its code (the namespace's others with it). */
  pid_t work = fork();
  if (work < 0) die("fork");
  if (work == 0) {
    signal(SIGTERM, SIG_DFL);
    signal(SIGINT, SIG_DFL);
    if (uid >= 0) drop((uid_t)uid, (gid_t)gid);
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) die("no_new_privs");
    execvp(argv[i], argv + i);
    int e = errno;
    fprintf(stderr, "loom-sandbox: %s: %s\n", argv[i], strerror(e));
    _exit(e == ENOENT ? 127 : 126);
  }
  /* PID 1 keeps no capability (it only waits): every set emptied with one capset. It never
     execs, so the bounding set (41 prctl calls to empty) would bound nothing. */
  {
    struct __user_cap_header_struct h = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct d[2] = {{0}};
    syscall(SYS_capset, &h, d);
  }
  /* One call, where a loop of close(2) up to 1024 was a tenth of the launcher's CPU. */
  if (syscall(SYS_close_range, 3, ~0U, 0) != 0)
    for (int fd = 3; fd < 1024; fd++) close(fd);
  for (;;) {
    int st;
    pid_t p = wait(&st);
    if (p < 0) {
      if (errno == EINTR) continue;
      _exit(FAIL);
    }
    if (p == work) _exit(WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st));
  }
}
