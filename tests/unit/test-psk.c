/* SPDX-License-Identifier: MIT */
/* The TLS-PSK key file: psktool's format parsed, every malformed line
 * refused with the file and line named, missing and empty files. */
#include <config.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <cmocka.h>

#include "common/error.h"
#include "common/psk.h"

#define KEY_A "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF"

static struct psk_keys *
parse (const char *text)
{
  return psk_parse ("keys.psk", text, strlen (text));
}

/* TEXT must be refused with an error containing every WANT. */
static void
refused (const char *text, const char *want1, const char *want2)
{
  struct psk_keys *k = parse (text);

  if (k != NULL)
    fail_msg ("accepted: %s", text);
  if (strstr (error_get (), want1) == NULL
      || (want2 && strstr (error_get (), want2) == NULL))
    fail_msg ("for %s: got '%s', wanted '%s' and '%s'", text, error_get (),
              want1, want2 ? want2 : "");
}

static void
test_psktool_format (void **state)
{
  struct psk_keys *k = parse ("alice:" KEY_A "\n"
                              "\n"
                              "# a comment\n"
                              "bob:0102\r\n"
                              "carol@host.example:ff  \n");
  const struct psk_key *key;

  assert_non_null (k);
  assert_int_equal (k->nr, 3);
  assert_string_equal (psk_first_username (k), "alice");
  key = psk_lookup (k, "alice");
  assert_non_null (key);
  assert_int_equal (key->len, 32);
  assert_int_equal (key->key[0], 0x00);
  assert_int_equal (key->key[10], 0xaa);
  assert_int_equal (key->key[31], 0xff);  /* upper case digits too */
  key = psk_lookup (k, "bob");
  assert_non_null (key);
  assert_int_equal (key->len, 2);
  assert_int_equal (key->key[0], 1);
  assert_int_equal (key->key[1], 2);
  assert_non_null (psk_lookup (k, "carol@host.example"));
  assert_null (psk_lookup (k, "alic"));
  assert_null (psk_lookup (k, "alice:"));
  assert_null (psk_lookup (k, ""));
  psk_free (k);
}

static void
test_no_final_newline (void **state)
{
  struct psk_keys *k = parse ("a:01\nb:02");

  assert_non_null (k);
  assert_int_equal (k->nr, 2);
  assert_int_equal (psk_lookup (k, "b")->key[0], 2);
  psk_free (k);
}

static void
test_malformed_lines (void **state)
{
  refused ("alice:0011\nbob\n", "keys.psk:2:", "USERNAME:HEXKEY");
  refused (":0011\n", "keys.psk:1:", "empty username");
  refused ("alice:\n", "keys.psk:1:", "key for 'alice'");
  refused ("alice:001\n", "keys.psk:1:", "even number");
  refused ("alice:00zz\n", "keys.psk:1:", "not hexadecimal");
  refused ("\n\nal ice:0011\n", "keys.psk:3:", "spaces");
  refused ("alice:00 11\n", "keys.psk:1:", "not hexadecimal");
  refused ("alice:0011\nbob:22\nalice:33\n", "keys.psk:3:", "(line 1)");

  static const char nul[] = "alice:00\0" "11\n";
  assert_null (psk_parse ("keys.psk", nul, sizeof nul - 1));
  assert_non_null (strstr (error_get (), "keys.psk:1: NUL"));
}

static void
test_limits (void **state)
{
  char user[PSK_MAX_USERNAME + 8], key[2 * PSK_MAX_KEY + 8];
  char text[sizeof user + sizeof key + 4];
  struct psk_keys *k;

  memset (user, 'u', PSK_MAX_USERNAME);
  user[PSK_MAX_USERNAME] = '\0';
  memset (key, 'a', 2 * PSK_MAX_KEY);
  key[2 * PSK_MAX_KEY] = '\0';
  snprintf (text, sizeof text, "%s:%s\n", user, key);
  k = parse (text);
  assert_non_null (k);
  assert_int_equal (k->keys[0].len, PSK_MAX_KEY);
  psk_free (k);
  snprintf (text, sizeof text, "%sx:00\n", user);
  refused (text, "keys.psk:1:", "longer than");
  snprintf (text, sizeof text, "u:%saa\n", key);
  refused (text, "keys.psk:1:", "hex digits");
}

static void
test_no_keys (void **state)
{
  refused ("", "keys.psk: no keys", NULL);
  refused ("# only a comment\n\n", "keys.psk: no keys", NULL);
}

static void
test_load (void **state)
{
  char path[] = "/tmp/mirrord-test-psk-XXXXXX";
  const char *text = "alice:" KEY_A "\n";
  struct psk_keys *k;
  int fd = mkstemp (path);

  assert_true (fd >= 0);
  assert_null (psk_load (path));                    /* empty */
  assert_non_null (strstr (error_get (), path));
  assert_non_null (strstr (error_get (), "empty"));
  assert_int_equal (write (fd, text, strlen (text)), (ssize_t) strlen (text));
  close (fd);
  k = psk_load (path);
  assert_non_null (k);
  assert_string_equal (k->file, path);
  assert_int_equal (psk_lookup (k, "alice")->len, 32);
  psk_free (k);
  unlink (path);

  assert_null (psk_load (path));                    /* gone */
  assert_non_null (strstr (error_get (), path));
  assert_non_null (strstr (error_get (), "No such file"));
  assert_null (psk_load ("/tmp"));
  assert_non_null (strstr (error_get (), "not a regular file"));
  psk_free (NULL);
}

int
main (void)
{
  const struct CMUnitTest tests[] = {
    cmocka_unit_test (test_psktool_format),
    cmocka_unit_test (test_no_final_newline),
    cmocka_unit_test (test_malformed_lines),
    cmocka_unit_test (test_limits),
    cmocka_unit_test (test_no_keys),
    cmocka_unit_test (test_load),
  };
  return cmocka_run_group_tests (tests, NULL, NULL);
}
