/* SPDX-License-Identifier: MIT */
/* Configuration: the INI file (errors name file and line), --export
 * specs, sizes, and command-line precedence. */
#include <config.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "common/error.h"
#include "common/size.h"
#include "mirrord/config.h"

static char tmpl[] = "/tmp/mirrord-test-config-XXXXXX";

static const char *
write_file (const char *text)
{
  static char path[64];
  int fd;

  strcpy (path, tmpl);
  fd = mkstemp (path);
  assert_true (fd >= 0);
  assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
  close (fd);
  return path;
}

static int
parse (const char *text, struct config *cfg)
{
  const char *path = write_file (text);
  int r;

  memset (cfg, 0, sizeof *cfg);
  r = config_parse_file (cfg, path);
  unlink (path);
  return r;
}

static void
test_good_file (void **state)
{
  struct config cfg;

  assert_int_equal (parse (
    "; a comment\n"
    "[mirrord]\n"
    "nbd-socket = /tmp/x.sock\n"
    "nbd-listen = 127.0.0.1:10809\n"
    "\n"
    "[export vm1]\n"
    "path = /images/vm1.img\n"
    "format = raw\n"
    "role = secondary\n"
    "peer = nbd://hostA:10809/vm1\n"
    "mode = async\n"
    "granularity = 128K\n"
    "bandwidth = 100M\n"
    "readonly = true\n"
    "[export vm2]\n"
    "path = /images/vm2.qcow2\n", &cfg), 0);
  assert_string_equal (cfg.nbd_socket, "/tmp/x.sock");
  assert_int_equal (cfg.nr_listen, 1);
  assert_int_equal (cfg.nr_exports, 2);
  assert_string_equal (cfg.exports[0].name, "vm1");
  assert_int_equal (cfg.exports[0].format, IMAGE_FORMAT_RAW);
  assert_int_equal (cfg.exports[0].role, ROLE_SECONDARY);
  assert_int_equal (cfg.exports[0].mode, MODE_ASYNC);
  assert_int_equal (cfg.exports[0].granularity, 128 << 10);
  assert_int_equal (cfg.exports[0].bandwidth, 100 << 20);
  assert_true (cfg.exports[0].readonly);
  assert_string_equal (cfg.exports[0].peer, "nbd://hostA:10809/vm1");
  assert_int_equal (cfg.exports[1].format, IMAGE_FORMAT_AUTO);
  assert_int_equal (cfg.exports[1].granularity, 64 << 10);
  config_free (&cfg);
}

/* Each bad file fails, and the message names the expected line. */
static void
expect_error (const char *text, const char *line_tag, const char *words)
{
  struct config cfg;

  assert_int_equal (parse (text, &cfg), -1);
  if (strstr (error_get (), line_tag) == NULL || strstr (error_get (), words) == NULL)
    fail_msg ("error '%s' lacks '%s' or '%s'", error_get (), line_tag, words);
  config_free (&cfg);
}

static void
test_bad_files (void **state)
{
  expect_error ("[mirrord]\nbogus = 1\n", ":2:", "unknown key 'bogus'");
  expect_error ("[mirrord]\n\n[export a]\npath=/x\nformat = vmdk\n", ":5:", "vmdk");
  expect_error ("[export a]\npath=/x\nrole = leader\n", ":3:", "primary or secondary");
  expect_error ("[export a]\npath=/x\ngranularity = 3K\n", ":1:", "power of two");
  expect_error ("[export a]\npath=/x\ngranularity = lots\n", ":3:", "invalid size");
  expect_error ("[weird]\nx = 1\n", ":2:", "unknown section");
  expect_error ("[export a]\nformat = raw\n", ":1:", "no path");
  expect_error ("[export a]\n", ":1:", "no path");
  expect_error ("[export a]\npath=/x\n[export a]\npath=/y\n", ":3:", "defined twice");
  expect_error ("[mirrord]\nthis line has no equals sign\n", ":2:", "syntax");
  expect_error ("[export a]\npath=/x\nreadonly = maybe\n", ":3:", "true or false");
  expect_error ("[export a/b]\npath=/x\n", ":1:", "invalid");
}

static void
test_missing_file (void **state)
{
  struct config cfg = { 0 };

  assert_int_equal (config_parse_file (&cfg, "/nonexistent/mirrord.conf"), -1);
  assert_non_null (strstr (error_get (), "/nonexistent/mirrord.conf"));
  config_free (&cfg);
}

static void
test_export_spec (void **state)
{
  struct export_spec s;

  export_spec_init (&s);
  assert_int_equal (export_spec_parse (&s, "vm1=/img/a.raw,format=raw,readonly,mode=async"), 0);
  assert_string_equal (s.name, "vm1");
  assert_string_equal (s.path, "/img/a.raw");
  assert_true (s.readonly);
  assert_int_equal (s.mode, MODE_ASYNC);
  export_spec_clear (&s);

  assert_int_equal (export_spec_parse (&s, "novalue"), -1);
  export_spec_clear (&s);
  assert_int_equal (export_spec_parse (&s, "vm1=/a,colour=blue"), -1);
  assert_non_null (strstr (error_get (), "colour"));
  export_spec_clear (&s);
  assert_int_equal (export_spec_parse (&s, "=/a"), -1);
  export_spec_clear (&s);
  assert_int_equal (export_spec_parse (&s, "vm1=/a,bogus"), -1);
  export_spec_clear (&s);
}

static void
test_sizes (void **state)
{
  uint64_t v;

  assert_int_equal (size_parse ("0", &v), 0);
  assert_int_equal (v, 0);
  assert_int_equal (size_parse ("64K", &v), 0);
  assert_int_equal (v, 65536);
  assert_int_equal (size_parse ("100M", &v), 0);
  assert_int_equal (v, 100u << 20);
  assert_int_equal (size_parse ("1g", &v), 0);
  assert_int_equal (v, 1u << 30);
  assert_int_equal (size_parse ("2GiB", &v), 0);
  assert_int_equal (v, UINT64_C (2) << 30);
  assert_int_equal (size_parse ("16E", &v), -1);      /* overflow */
  assert_int_equal (size_parse ("-1", &v), -1);
  assert_int_equal (size_parse ("1X", &v), -1);
  assert_int_equal (size_parse ("", &v), -1);
  assert_int_equal (size_parse ("K", &v), -1);
}

static void
test_command_line (void **state)
{
  struct config cfg;
  const char *path = write_file ("[mirrord]\nnbd-socket = /from/file\n"
                                 "control = /file/control\n"
                                 "[export a]\npath = /a\n");
  char *argv[] = { "mirrord", "-c", (char *) path, "--nbd-socket", "/from/cli",
                   "--export", "b=/b", "-f", "-v", NULL };

  assert_int_equal (config_load (&cfg, 9, argv), CONFIG_OK);
  assert_string_equal (cfg.nbd_socket, "/from/cli");
  assert_string_equal (cfg.control, "/file/control");
  assert_string_equal (cfg.state_dir, "/var/lib/mirrord");
  assert_true (cfg.foreground);
  assert_int_equal (cfg.nr_exports, 2);
  assert_int_equal (cfg.nr_file_exports, 1);
  config_free (&cfg);

  char *dup[] = { "mirrord", "-c", (char *) path, "--export", "a=/other", NULL };
  assert_int_equal (config_load (&cfg, 5, dup), CONFIG_ERROR);
  config_free (&cfg);
  char *bad[] = { "mirrord", "--no-such-option", NULL };
  assert_int_equal (config_load (&cfg, 2, bad), CONFIG_ERROR);
  assert_non_null (strstr (error_get (), "--no-such-option"));
  config_free (&cfg);
  char *extra[] = { "mirrord", "stray", NULL };
  assert_int_equal (config_load (&cfg, 2, extra), CONFIG_ERROR);
  config_free (&cfg);
  unlink (path);
}

/* The connection limits: defaults, the older max-connections as the
 * default of both budgets, and each key on its own. */
static void
test_connection_limits (void **state)
{
  struct config cfg;
  const char *path;
  char *argv[] = { "mirrord", "-c", NULL, NULL };

  argv[2] = (char *) (path = write_file ("[mirrord]\n"));
  assert_int_equal (config_load (&cfg, 3, argv), CONFIG_OK);
  assert_int_equal (cfg.max_connections_unix, 1024);
  assert_int_equal (cfg.max_connections_tcp, 256);
  assert_int_equal (cfg.max_connections_per_host, 32);
  assert_int_equal (cfg.handshake_timeout, 10);
  config_free (&cfg);
  unlink (path);

  argv[2] = (char *) (path = write_file ("[mirrord]\nmax-connections = 100\n"
                                         "max-connections-tcp = 20\n"));
  assert_int_equal (config_load (&cfg, 3, argv), CONFIG_OK);
  assert_int_equal (cfg.max_connections_unix, 100);
  assert_int_equal (cfg.max_connections_tcp, 20);
  config_free (&cfg);
  unlink (path);

  argv[2] = (char *) (path = write_file ("[mirrord]\nmax-connections-unix = 7\n"
                                         "max-connections-per-host = 3\n"
                                         "handshake-timeout = 2\n"));
  assert_int_equal (config_load (&cfg, 3, argv), CONFIG_OK);
  assert_int_equal (cfg.max_connections_unix, 7);
  assert_int_equal (cfg.max_connections_tcp, 256);
  assert_int_equal (cfg.max_connections_per_host, 3);
  assert_int_equal (cfg.handshake_timeout, 2);
  config_free (&cfg);
  unlink (path);

  argv[2] = (char *) (path = write_file ("[mirrord]\nmax-connections-tcp = lots\n"));
  assert_int_equal (config_load (&cfg, 3, argv), CONFIG_ERROR);
  assert_non_null (strstr (error_get (), "max-connections-tcp"));
  assert_non_null (strstr (error_get (), ":2"));
  config_free (&cfg);
  unlink (path);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_good_file),
    cmocka_unit_test (test_bad_files),
    cmocka_unit_test (test_missing_file),
    cmocka_unit_test (test_export_spec),
    cmocka_unit_test (test_sizes),
    cmocka_unit_test (test_command_line),
    cmocka_unit_test (test_connection_limits),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
