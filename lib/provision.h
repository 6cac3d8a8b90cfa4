/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * First-boot provisioning of a unit made from a fleet image (lockroot image).
 *
 * The image's root volume holds one keyslot, opened by a one-time provisioning key and marked
 * by a "lockroot-provision" token. At the first boot of each unit, lr_provision():
 *   1. removes whatever an interrupted earlier attempt added (every keyslot and token but the
 *      provisioning ones);
 *   2. enrolls this unit's HSM bound to this host (keyslot + lockroot token) and a new
 *      recovery keyslot, both authorised by the provisioning key;
 *   3. writes the provisioning record (host identity, LUKS UUID, recovery key) to the record
 *      directory (atomically, fsynced) and reads it back;
 *   4. destroys the provisioning keyslot;
 *   5. with unique_volume_key: adds the HSM and recovery passphrases for a new random volume
 *      key (unbound keyslots, assigned to the same tokens) and initialises libcryptsetup's
 *      re-encryption to it; the data is re-encrypted online later (lr_convert_run);
 *   6. removes the provisioning token; after a re-key, once the re-encryption is finished
 *      (libcryptsetup refuses token changes while it runs): lr_provision_finish().
 * State is read from the header alone, so a power cut at any point is resumed by the next call:
 * until step 4 the provisioning keyslot is there (the unit boots with the provisioning key, and
 * the next boot provisions again: a new record replaces the old one); from step 4 on the HSM
 * and recovery keyslots are there. Step 5 after a cut reads the recovery key back from the
 * record. The unit never has neither key.
 */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "lockroot.h"

#define LR_PROVISION_KEY_FILE "lockroot-provision.key"
#define LR_PROVISION_CONF_FILE "lockroot-provision.json"
#define LR_PROVISION_RECORD_DIR "lockroot-records"

enum lr_provision_state {
	LR_PROVISION_NONE,     /* no provisioning token: provisioned (or never made by lockroot image) */
	LR_PROVISION_PENDING,  /* the provisioning keyslot is there */
	LR_PROVISION_REKEY,    /* provisioned; the new volume key is still to be set up */
	LR_PROVISION_REKEYING, /* provisioned; the data is being re-encrypted to the new volume key */
	LR_PROVISION_CLEANUP,  /* provisioned; only the provisioning token is left */
};
const char *lr_provision_state_name(enum lr_provision_state s);

/* State of device's header; *keyslot: the provisioning keyslot (or -1). */
int lr_provision_examine(const char *device, enum lr_provision_state *state, int *keyslot);

struct lr_provision_params {
	const char *device;                 /* the LUKS2 root volume (its partition) */
	const struct lr_secret *key;        /* the provisioning key; NULL when it is gone */
	struct lr_hsm *hsm;
	uint32_t bind_mask;
	bool bind_default;
	struct lr_pbkdf_cost recovery_cost;
	bool unique_volume_key;
	const char *record_dir;             /* a directory on the record device */
};

struct lr_provision_result {
	enum lr_provision_state before;
	char record_path[4096];
	bool rekey_started;                 /* step 5 done by this call */
};

/* Run the steps still to do (above). 0 when the state is now NONE (or REKEY set up). */
int lr_provision(const struct lr_provision_params *p, struct lr_provision_result *res);

/* The record for this host in dir: its path (the name is made of the host identity). */
int lr_provision_record_path(const char *device, const char *dir, char *out, size_t len);

/* lockroot image: record in the provisioning token of device (a volume or a header file)
 * whether the first boot re-keys the volume. */
int lr_provision_mark(const char *device, bool unique_volume_key);

/* After the online re-encryption: the provisioning token goes (nothing when it is not due). */
int lr_provision_finish(const char *device);
