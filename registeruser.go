package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"

	"github.com/ganglionhq/ganglion/deployments/config"
	"github.com/ganglionhq/ganglion/gateway/client"
)

// registerUserCmd registers a user through the admin API's shared-secret registration,
// as Synapse's register_new_matrix_user does: the secret and the server's address come
// from the configuration files.
func registerUserCmd(args []string) error {
	fs := flag.NewFlagSet("register-user", flag.ContinueOnError)
	user := fs.String("u", "", "the new user's localpart")
	password := fs.String("p", "", "the new user's password")
	admin := fs.Bool("admin", false, "make the user a server admin")
	url := fs.String("url", "", "the server's client API (default: the first client listener of the configuration)")
	cfg, err := loadConfig(fs, args)
	if err != nil {
		return err
	}
	if *user == "" || *password == "" {
		return errors.New("-u and -p are required")
	}
	if cfg.RegistrationSharedSecret == "" {
		return errors.New("registration_shared_secret is not set in the configuration")
	}
	base := *url
	if base == "" {
		if base, err = clientURL(cfg); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nonce struct {
		Nonce string `json:"nonce"`
	}
	if err := call(ctx, http.MethodGet, base+"/_synapse/admin/v1/register", nil, &nonce); err != nil {
		return err
	}
	body := map[string]any{"nonce": nonce.Nonce, "username": *user, "password": *password, "admin": *admin,
		"mac": client.RegistrationMAC(cfg.RegistrationSharedSecret, nonce.Nonce, *user, *password, *admin, nil)}
	var res struct {
		UserID string `json:"user_id"`
	}
	if err := call(ctx, http.MethodPost, base+"/_synapse/admin/v1/register", body, &res); err != nil {
		return err
	}
	fmt.Printf("registered %s (admin: %v)\n", res.UserID, *admin)
	return nil
}

// clientURL is the address of the configuration's first HTTP listener with the client
// resource, on loopback when it listens everywhere.
func clientURL(cfg *config.Config) (string, error) {
	for _, l := range cfg.HTTPListeners() {
		if !l.Has("client") {
			continue
		}
		host := "127.0.0.1"
		if len(l.BindAddresses) > 0 && l.BindAddresses[0] != "0.0.0.0" && l.BindAddresses[0] != "::" {
			host = l.BindAddresses[0]
		}
		return "http://" + net.JoinHostPort(host, strconv.Itoa(l.Port)), nil
	}
	return "", errors.New("the configuration has no client listener; give -url")
}

func call(ctx context.Context, method, url string, body, out any) error {
	var r io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, url, r)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s %s: HTTP %d: %s", method, url, resp.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}
