#!/usr/bin/env python3
"""Drives the labelling page in headless Chromium (Debian's chromium + chromium-driver) like
an analyst: draws an assessment sample and labels every tile by keys and clicks, reads the
accuracy table, then labels corrections (one as a new class), retrains and waits for the new
map. Prints one JSON object with what it did and saw; the Rust test checks it against S3.

usage: label_browser.py BASE_URL JOB TOKEN SHOTS_DIR PER_CLASS N_CORRECTIONS
"""
import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

base, job, token, shots, per_class, n_fix = sys.argv[1:7]
per_class, n_fix = int(per_class), int(n_fix)

opts = webdriver.ChromeOptions()
for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400"]:
    opts.add_argument(a)
opts.binary_location = "/usr/bin/chromium"
d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=opts)
wait = WebDriverWait(d, 60)
out = {"assessment": {}, "corrections": {}}


def done_count():
    return int(d.find_element(By.ID, "progress").get_attribute("data-done") or 0)


def typed(elem_id, text):
    e = d.find_element(By.ID, elem_id)
    e.clear()
    e.send_keys(text)
    e.send_keys(Keys.TAB)  # fires change, which stores it for the page


try:
    # --- assessment: a stratified sample, predictions hidden
    d.get(f"{base}/jobs/{job}/label?mode=assess")
    typed("who", "ann")
    typed("token", token)
    wait.until(lambda _: len(d.find_elements(By.CSS_SELECTOR, "#date option")) > 0)
    typed("perclass", str(per_class))
    d.find_element(By.ID, "draw").click()
    wait.until(lambda _: d.find_element(By.ID, "progress").text.startswith("0 of"))
    total = int(d.find_element(By.ID, "progress").text.split(" of ")[1].split(" ")[0])
    out["assessment"]["sample"] = total
    out["assessment"]["pred_shown"] = d.find_element(By.ID, "pred").text
    classes = [b.get_attribute("data-class") for b in d.find_elements(By.CSS_SELECTOR, "#classes button")]
    given = {}
    body = d.find_element(By.TAG_NAME, "body")
    for i in range(total):
        tile = d.find_element(By.ID, "tilename").text
        # the analyst's call: alternate keys and clicks over the classes
        k = (i * 3) % len(classes)
        if i % 2 == 0:
            body.send_keys(str(k + 1))
        else:
            d.find_element(By.CSS_SELECTOR, f'#classes button[data-class="{classes[k]}"]').click()
        given[tile] = classes[k]
        wait.until(lambda _, n=i + 1: done_count() == n)
    out["assessment"]["given"] = given
    wait.until(lambda _: d.find_elements(By.ID, "overall"))
    out["assessment"]["overall_text"] = d.find_element(By.ID, "overall").text
    out["assessment"]["table_rows"] = len(d.find_elements(By.CSS_SELECTOR, "#acctable tr")) - 1
    d.save_screenshot(f"{shots}/label-assess.png")

    # --- correction: least confident first, predictions shown; one new class
    d.get(f"{base}/jobs/{job}/label?mode=correct")
    wait.until(lambda _: d.find_element(By.ID, "progress").text)
    out["corrections"]["pred_shown"] = d.find_element(By.ID, "pred").text
    fixes = {}
    body = d.find_element(By.TAG_NAME, "body")
    start = done_count()
    for i in range(n_fix):
        tile = d.find_element(By.ID, "tilename").text
        if i % 2 == 0:
            typed("newclass", "cropland")
            d.find_element(By.ID, "addclass").click()
            fixes[tile] = "cropland"
        else:
            body.send_keys("1")
            fixes[tile] = d.find_elements(By.CSS_SELECTOR, "#classes button")[0].get_attribute("data-class")
        wait.until(lambda _, n=start + i + 1: done_count() == n)
    out["corrections"]["given"] = fixes
    # previous goes back to the last labelled tile
    d.find_element(By.ID, "prev").click()
    out["corrections"]["prev_tile"] = d.find_element(By.ID, "tilename").text
    t0 = time.time()
    d.find_element(By.ID, "retrain").click()
    WebDriverWait(d, 600).until(lambda _: d.find_element(By.ID, "loop").get_attribute("data-seconds")
                                or "failed" in d.find_element(By.ID, "loop").text)
    loop = d.find_element(By.ID, "loop")
    out["corrections"]["loop_text"] = loop.text
    out["corrections"]["seconds_page"] = loop.get_attribute("data-seconds")
    out["corrections"]["seconds_click_to_map"] = round(time.time() - t0, 1)
    out["corrections"]["new_job"] = loop.get_attribute("data-job")
    wait.until(lambda _: d.find_elements(By.CSS_SELECTOR, "#comparison tr"))
    out["corrections"]["comparison"] = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#comparison tr")]
    out["corrections"]["new_map_cells"] = d.find_element(By.CSS_SELECTOR, "#stage canvas").get_attribute("data-cells")
    d.save_screenshot(f"{shots}/label-correct.png")

    # --- the viewer of the new map
    d.get(f"{base}/jobs/{out['corrections']['new_job']}/view")
    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "#stage canvas").get_attribute("data-cells"))
    wait.until(lambda _: d.find_element(By.CSS_SELECTOR, "#stage img").get_attribute("data-loaded"))
    out["viewer"] = {
        "cells": d.find_element(By.CSS_SELECTOR, "#stage canvas").get_attribute("data-cells"),
        "scene_px": d.find_element(By.CSS_SELECTOR, "#stage img").get_attribute("data-loaded"),
        "legend": d.find_element(By.ID, "legend").text,
        "dates": len(d.find_elements(By.CSS_SELECTOR, "#date option")),
    }
    d.save_screenshot(f"{shots}/viewer.png")
    out["console_errors"] = [e["message"] for e in d.get_log("browser") if e.get("level") == "SEVERE"] if hasattr(d, "get_log") else []
finally:
    d.quit()
print(json.dumps(out))
